"""An image strip of a talking video: evenly spaced frames above the speech loudness, one marker per frame.

The README and the demo's summary show it: a reader sees at a glance whether the mouth opens where the speech is loud
(docs/evaluation.md, "Image strip").  Drawn on a ``matplotlib.figure.Figure`` with the Agg canvas directly, as the
report's plots are, so nothing touches pyplot's global state.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avatar_gen.errors import UserError
from avatar_gen.media.audio import SAMPLE_RATE, extract_audio, rms_envelope
from avatar_gen.media.video import iter_frames, probe_video
from avatar_gen.utils.io import atomic_path

DEFAULT_STRIP_FRAMES = 10


def strip_frame_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``num_frames`` (all of them when there are fewer)."""
    if num_frames < 1 or count < 1:
        raise ValueError(f"strip needs at least one frame and one pick, got {num_frames} frames, {count} picks")
    return np.unique(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int))


def write_speech_strip(video: str | os.PathLike, png: str | os.PathLike, count: int = DEFAULT_STRIP_FRAMES,
                       title: str | None = None) -> Path:
    """Write the strip of ``video`` (an MP4 with sound) to ``png``; returns ``png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    video, png = Path(video), Path(png)
    info = probe_video(video)
    if not info.has_audio:
        raise UserError(f"{video} has no sound: the strip draws frames above the speech loudness")
    # Only the picked frames are kept: a long video decoded whole would cost gigabytes for ten thumbnails.
    wanted = set(strip_frame_indices(max(info.num_frames, 1), count).tolist())
    kept: dict[int, np.ndarray] = {}
    last, total = None, 0
    for index, (_, frame) in enumerate(iter_frames(video)):
        if index in wanted:
            kept[index] = frame
        last, total = (index, frame), index + 1
    if last is None:
        raise UserError(f"{video} has no frames")
    if last[0] not in kept and max(wanted) >= total:  # the container's frame count was an overestimate
        kept[last[0]] = last[1]
    picks = np.array(sorted(kept))
    frames = kept
    audio = extract_audio(video, SAMPLE_RATE)
    loudness = rms_envelope(audio, SAMPLE_RATE, info.fps, total)
    seconds = np.arange(total) / info.fps

    figure = Figure(figsize=(1.3 * len(picks), 2.6))
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, len(picks), height_ratios=(1.3, 0.7), hspace=0.05, wspace=0.03)
    for column, index in enumerate(picks):
        axes = figure.add_subplot(grid[0, column])
        axes.imshow(frames[index])
        axes.set_axis_off()
        axes.set_title(f"{seconds[index]:.1f} s", fontsize=7)
    curve = figure.add_subplot(grid[1, :])
    curve.fill_between(seconds, loudness, color="tab:blue", alpha=0.5, linewidth=0)
    curve.plot(seconds[picks], loudness[picks], "v", color="tab:red", markersize=5)
    curve.set(xlim=(0, max(seconds[-1], 1e-3)), yticks=[], xlabel="seconds (speech loudness; ▼ = frames above)")
    if title:
        figure.suptitle(title, fontsize=9)
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return png
