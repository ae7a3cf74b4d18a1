"""Cropping and resizing of RGB frames (uint8 arrays [T, H, W, 3] or [H, W, 3])."""

from __future__ import annotations

import cv2
import numpy as np


def crop_box(src_height: int, src_width: int, target_height: int, target_width: int,
             center: tuple[float, float] | None = None, box_height: float | None = None) -> tuple[int, int, int, int]:
    """The crop (top, left, height, width) with the target's aspect ratio, centred on ``center``.

    ``center`` is (x, y) in [0, 1] of the source (default the middle).  ``box_height`` (pixels)
    asks for a smaller box (e.g. a half-body crop sized from the face); by default the box is the
    largest one that fits.  The box is shifted, never shrunk, to stay inside the frame.
    """
    aspect = target_width / target_height
    max_height = min(src_height, src_width / aspect)
    height = max_height if box_height is None else min(max(box_height, 2.0), max_height)
    width = height * aspect
    cx, cy = (0.5, 0.5) if center is None else center
    left = cx * src_width - width / 2
    top = cy * src_height - height / 2
    left = min(max(left, 0.0), src_width - width)
    top = min(max(top, 0.0), src_height - height)
    return int(round(top)), int(round(left)), max(1, int(round(height))), max(1, int(round(width)))


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [T, H, W, 3] or [H, W, 3] frames; area filter when shrinking, bilinear when growing."""
    single = frames.ndim == 3
    batch = frames[None] if single else frames
    if batch.shape[1:3] == (height, width):
        return frames
    shrinking = height * width < batch.shape[1] * batch.shape[2]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(frame, (width, height), interpolation=interpolation) for frame in batch])
    return out[0] if single else out


def fit_frames(frames: np.ndarray, height: int, width: int, center: tuple[float, float] | None = None,
               box_height: float | None = None) -> np.ndarray:
    """Crop to the target aspect (around ``center``) and resize to exactly ``height`` x ``width``."""
    src_height, src_width = frames.shape[-3], frames.shape[-2]
    top, left, crop_h, crop_w = crop_box(src_height, src_width, height, width, center, box_height)
    cropped = frames[..., top:top + crop_h, left:left + crop_w, :]
    return resize_frames(np.ascontiguousarray(cropped), height, width)
