"""Cutting a clip into VAE-sized chunks: decode at the target fps, crop/resize, stream fixed-length windows.

Chunk k of a clip covers frames ``[k * stride, k * stride + num_frames)`` of the clip resampled to
``fps`` (frame i is on screen at ``i / fps`` seconds from the clip start).  A last window that would
run past the end of the clip is dropped (and reported), never padded.  Frames are streamed: at most
``num_frames + stride`` decoded frames are held per clip, so long videos do not fill memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_gen.media.frames import crop_box, fit_frames
from avatar_gen.media.video import iter_frames


@dataclass
class Chunk:
    """One window of a clip, ready to encode: ``frames`` uint8 [num_frames, height, width, 3]."""

    clip_id: str
    index: int
    start_frame: int
    frames: np.ndarray


@dataclass
class ClipReport:
    """What decoding a clip found, filled in while :func:`stream_chunks` runs."""

    total_frames: int = 0  # frames at the target fps
    source_size: tuple[int, int] | None = None  # (height, width) of the video
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) in source pixels

    def chunk_starts(self, num_frames: int, stride: int) -> list[int]:
        """Start frames of the complete chunks of a clip of ``total_frames`` frames."""
        if self.total_frames < num_frames:
            return []
        return list(range(0, self.total_frames - num_frames + 1, stride))

    def dropped_tail(self, num_frames: int, stride: int) -> dict | None:
        """The partial window after the last complete chunk: ``{start_frame, num_frames}``, or None."""
        starts = self.chunk_starts(num_frames, stride)
        next_start = starts[-1] + stride if starts else 0
        if next_start >= self.total_frames:
            return None
        return {"start_frame": next_start, "num_frames": self.total_frames - next_start}


def stream_chunks(path: Path, clip_id: str, fps: float, height: int, width: int, num_frames: int, stride: int,
                  center: tuple[float, float] | None = None, report: ClipReport | None = None,
                  wanted: Callable[[int], bool] | None = None) -> Iterator[Chunk]:
    """Yield the complete chunks of a video in order, frames cropped (around ``center``) and resized.

    ``wanted(k)`` false skips building chunk k (already encoded); frames are still decoded, since the
    next chunk may overlap it.  ``report`` receives the frame count and crop box as decoding goes on.
    Raises MediaError for unreadable videos or decoding failures (chunks before a failure were yielded).
    """
    report = report if report is not None else ClipReport()
    window: deque[np.ndarray] = deque()
    window_start = 0  # frame index of window[0]
    chunk_index = 0
    for frame_index, (_, frame) in enumerate(iter_frames(path, fps=fps)):
        if report.source_size is None:
            report.source_size = (frame.shape[0], frame.shape[1])
            report.crop = crop_box(frame.shape[0], frame.shape[1], height, width, center)
        report.total_frames = frame_index + 1
        next_start = chunk_index * stride
        if frame_index < next_start:
            window_start = frame_index + 1  # a gap between chunks (stride > num_frames): not kept
            continue
        window.append(fit_frames(frame, height, width, center))
        if len(window) < num_frames:
            continue
        if wanted is None or wanted(chunk_index):
            yield Chunk(clip_id=clip_id, index=chunk_index, start_frame=window_start,
                        frames=np.stack(list(window)[:num_frames]))
        chunk_index += 1
        next_start = chunk_index * stride
        while window and window_start < next_start:
            window.popleft()
            window_start += 1
