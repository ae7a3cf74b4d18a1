"""Drift over a long generated video: seams at chunk boundaries, colour shift, and windows at its start and end.

A long video is made chunk by chunk (docs/inference.md); what goes wrong with length shows as a seam where one chunk
hands over to the next (a jump between two frames that belong to different chunks), as a slow colour shift, and as
identity or lip sync that is worse at the end than at the start.  Frames are uint8 RGB [T, H, W, 3].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_gen.evaluation.quality import frame_differences


@dataclass(frozen=True)
class BoundaryFlicker:
    """Mean absolute frame difference (0..255) across chunk boundaries and between frames of one chunk.

    ``ratio`` = boundary / inside (1: the seams are invisible in this measure; None without boundaries).
    """

    boundary: float | None
    inside: float | None
    ratio: float | None
    num_boundaries: int
    num_inside: int


def boundary_flicker(frames: np.ndarray, chunk_starts: list[int]) -> BoundaryFlicker:
    """Frame differences at the first frame of every chunk but the first (``chunk_starts``: first frame index of
    each chunk, as the generator's chunk plan gives them) against all other consecutive frame pairs."""
    differences = frame_differences(frames)  # differences[t - 1] is between frames t - 1 and t
    at_boundary = np.zeros(len(differences), dtype=bool)
    for start in chunk_starts:
        if 0 < start < len(frames):
            at_boundary[start - 1] = True
    boundary = float(differences[at_boundary].mean()) if at_boundary.any() else None
    inside = float(differences[~at_boundary].mean()) if (~at_boundary).any() else None
    ratio = boundary / inside if boundary is not None and inside else None
    return BoundaryFlicker(boundary=boundary, inside=inside, ratio=ratio, num_boundaries=int(at_boundary.sum()),
                           num_inside=int((~at_boundary).sum()))


def mean_lab(frames: np.ndarray) -> np.ndarray:
    """Mean CIE L*a*b* colour (L* 0..100, a*, b* about -128..127) of uint8 RGB frames, float [3]."""
    total = np.zeros(3, dtype=np.float64)
    for frame in frames:  # frame by frame: a float copy of a whole long video would cost gigabytes
        lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        total += lab.reshape(-1, 3).mean(axis=0)
    return total / max(len(frames), 1)


def lab_colour_shift(first: np.ndarray, last: np.ndarray) -> float:
    """CIE76 colour difference (Delta E) between the mean colours of two sets of frames; ~2.3 is a just noticeable
    difference."""
    return float(np.linalg.norm(mean_lab(first) - mean_lab(last)))


def edge_windows(num_frames: int, fps: float, seconds: float) -> tuple[slice, slice, bool]:
    """The first and the last ``seconds`` of a video of ``num_frames`` frames as frame slices, and whether the two
    overlap (a video shorter than twice the window)."""
    length = max(1, min(num_frames, int(round(seconds * fps))))
    return slice(0, length), slice(num_frames - length, num_frames), 2 * length > num_frames
