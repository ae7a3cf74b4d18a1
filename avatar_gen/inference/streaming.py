"""Chunk-by-chunk generation as a stream of decoded chunks: the engine under ``AvatarGenerator.stream``.

Speech longer than one chunk is generated chunk by chunk (:mod:`avatar_gen.inference.schedule`): chunk ``k + 1``
starts from chunk ``k``'s decoded last frame.  :func:`stream_chunks` runs that loop and yields every chunk's new
frames as soon as they are decoded, so a caller can make them playable (an MP4 segment, the web page) while the
next chunk is denoised.

Overlap (``overlap=True``)
    The loop runs in a worker thread and hands each decoded chunk over through a queue: whatever the caller does
    with chunk ``k`` (H.264 + AAC encoding of its segment, feeding the final MP4's encoder, sending it to a browser)
    runs while chunk ``k + 1`` is denoised.  The VAE decode of chunk ``k`` itself stays before chunk ``k + 1``: that
    chunk starts from chunk ``k``'s decoded last frame, and the LTX decoder's temporal receptive field spans most of
    a chunk, so no cheaper partial decode gives the same frame.  The model sees exactly the same calls in the same
    order with or without overlap (one ``torch.Generator``, used by the loop alone), so the frames are identical.

This module needs only torch and numpy (and the chunk plan), so that ``python -m bench.gpu`` can drive it on a
machine without the media stack.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from avatar_gen.inference.schedule import ChunkPlan

# denoise(index, condition_frame uint8 [H, W, 3], inputs, plan, on_step(step)) -> latents (anything decode takes)
DenoiseChunk = Callable[[int, np.ndarray, Any, ChunkPlan, Callable[[int], None]], Any]
# decode(latents, plan) -> uint8 frames [plan.num_frames, H, W, 3]
DecodeChunk = Callable[[Any, ChunkPlan], np.ndarray]

# Decoded chunks the worker may run ahead of a slow consumer (each holds one chunk of frames in memory).
MAX_CHUNKS_AHEAD = 2


class GenerationCancelled(Exception):
    """The consumer stopped reading the stream: the worker ends at the next denoising step."""


@dataclass
class DecodedChunk:
    """One chunk's new frames, in output order.

    frames: uint8 [n, H, W, 3] — all frames of chunk 0; later chunks without their first frame (the previous chunk's
    last, already delivered); the last chunk cut at the speech's frame count.  start_frame: output index of
    ``frames[0]``.  seconds: ``denoising`` and ``decoding`` wall time of this chunk.
    """

    index: int
    plan: ChunkPlan
    frames: np.ndarray
    start_frame: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def end_frame(self) -> int:
        return self.start_frame + len(self.frames)


def stream_chunks(chunks: Sequence[ChunkPlan], conditioning: Sequence[Any], first_frame: np.ndarray,
                  total_frames: int, denoise: DenoiseChunk, decode: DecodeChunk, overlap: bool = True,
                  on_step: Callable[[int, int], None] | None = None) -> Iterator[DecodedChunk]:
    """Denoise and decode ``chunks`` in order; yield each one's new frames (see :class:`DecodedChunk`).

    ``conditioning[k]`` is passed to ``denoise`` for chunk ``k``; ``first_frame`` conditions chunk 0, and chunk
    ``k``'s decoded last frame conditions chunk ``k + 1``.  ``on_step(chunk_index, step)`` is called after every
    denoising step (from the worker thread when ``overlap``).  Closing the iterator early cancels the work.
    """
    if len(chunks) != len(conditioning):
        raise ValueError(f"{len(chunks)} chunks but {len(conditioning)} conditionings")
    cancel = threading.Event()

    def produce() -> Iterator[DecodedChunk]:
        condition_frame = first_frame
        for index, (plan, inputs) in enumerate(zip(chunks, conditioning)):
            def step_done(step: int, chunk_index: int = index) -> None:
                if cancel.is_set():
                    raise GenerationCancelled()
                if on_step is not None:
                    on_step(chunk_index, step)

            started = time.perf_counter()
            latents = denoise(index, condition_frame, inputs, plan, step_done)
            denoised = time.perf_counter()
            frames = decode(latents, plan)
            decoded = time.perf_counter()
            condition_frame = frames[-1]
            skip = 0 if index == 0 else 1  # the previous chunk's last frame, already delivered
            keep = max(0, min(plan.end, total_frames) - plan.start - skip)
            yield DecodedChunk(index=index, plan=plan, frames=frames[skip:skip + keep], start_frame=plan.start + skip,
                               seconds={"denoising": denoised - started, "decoding": decoded - denoised})

    if not overlap:
        yield from produce()
        return

    handoff: queue.Queue = queue.Queue(maxsize=MAX_CHUNKS_AHEAD)
    finished = object()

    def put(item) -> bool:
        """Hand ``item`` over unless the consumer has gone (then give up instead of blocking forever)."""
        while not cancel.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for chunk in produce():
                if not put(chunk):
                    return
            put(finished)
        except GenerationCancelled:
            return
        except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
            put(exc)

    worker = threading.Thread(target=work, name="avatar-chunks", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is finished:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        worker.join()
