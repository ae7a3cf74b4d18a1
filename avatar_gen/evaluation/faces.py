"""Face tracking with OpenCV's Haar frontal-face cascade (ships inside the opencv wheel, no download).

Why Haar and not landmarks: mediapipe <= 0.10.21 (the last release with face-mesh models in the wheel)
needs numpy < 2, which conflicts with the project's numpy pin.  A Haar cascade gives a face *box* only;
the mouth is then measured in a fixed region of that box (see :mod:`avatar_gen.evaluation.lipsync`).

Boxes are ``(x, y, width, height)`` in pixels of the frames given, float.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import medfilt

from avatar_gen.media.faces import detect_faces as detect_frontal_faces

# Detection runs on a grey copy resized so that its short side is this many pixels (and its long side at
# most DETECTION_MAX_SIDE): a talking head's face (>= 15 % of the frame, see detect_faces) is then >= 24 px,
# the cascade's window, small generated clips (64-128 px) are upscaled, and HD frames stay fast.
DETECTION_SHORT_SIDE = 192
DETECTION_MAX_SIDE = 360
MIN_DETECTION_RATE = 0.2  # a clip whose sampled frames show a face less often than this has "no face"
SMOOTHING_FRAMES = 9  # median filter over box centre/size, like syncnet_python's track smoothing


@dataclass(frozen=True)
class FaceTrack:
    """One face followed through a clip.

    ``boxes``: float [T, 4] ``(x, y, width, height)`` per frame (interpolated where the detector missed,
    median-smoothed); ``detected``: bool [T], frames where the detector itself found the face; ``sampled``: bool
    [T], frames the detector ran on (None: every frame).
    """

    boxes: np.ndarray
    detected: np.ndarray
    sampled: np.ndarray | None = None

    @property
    def detection_rate(self) -> float:
        """Share of the frames the detector ran on where it found this face (with ``detect_every`` 2, a face found
        in every sampled frame has rate 1, not 0.5)."""
        looked = self.detected if self.sampled is None else self.detected[self.sampled]
        return float(looked.mean()) if looked.size else 0.0


def _detection_scale(height: int, width: int) -> float:
    short_side, long_side = min(height, width), max(height, width)
    return min(DETECTION_SHORT_SIDE / short_side, DETECTION_MAX_SIDE / long_side)


def detect_faces(frame: np.ndarray) -> np.ndarray:
    """All frontal faces in one uint8 RGB frame [H, W, 3], float [N, 4] boxes, largest first.

    Faces smaller than 15 % of the (resized) frame are background people.
    """
    height, width = frame.shape[:2]
    return detect_frontal_faces(frame, scale=_detection_scale(height, width), min_face_fraction=0.15,
                                min_face_pixels=24, min_neighbors=4)


def _centre_distance(boxes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    reference_centre = reference[:2] + reference[2:] / 2
    return np.linalg.norm(centres - reference_centre, axis=1) / max(reference[2], 1.0)


def _finish_track(num_frames: int, kept_frames: list[int], kept_boxes: list[np.ndarray],
                  sampled: np.ndarray) -> FaceTrack:
    """Interpolate a track's boxes to every frame and median-smooth them."""
    kept = np.stack(kept_boxes)
    all_frames = np.arange(num_frames)
    # Interpolate centre and size (not corners) so a missed frame does not skew the box.
    centre_size = np.concatenate([kept[:, :2] + kept[:, 2:] / 2, kept[:, 2:]], axis=1)
    filled = np.stack([np.interp(all_frames, kept_frames, centre_size[:, k]) for k in range(4)], axis=1)
    kernel = min(SMOOTHING_FRAMES, num_frames if num_frames % 2 else num_frames - 1)
    if kernel >= 3:
        filled = np.stack([medfilt(filled[:, k], kernel_size=kernel) for k in range(4)], axis=1)
    boxes = np.concatenate([filled[:, :2] - filled[:, 2:] / 2, filled[:, 2:]], axis=1)
    detected = np.zeros(num_frames, dtype=bool)
    detected[kept_frames] = True
    return FaceTrack(boxes=boxes, detected=detected, sampled=sampled)


def track_faces(frames: np.ndarray, detect_every: int = 1, max_faces: int = 3) -> list[FaceTrack]:
    """Follow every face of uint8 RGB frames [T, H, W, 3] that is found often enough, largest first.

    The detector runs on every ``detect_every``-th frame.  Each detection joins the track whose last
    box is nearest (centre within half a face width), else starts a new track; a track keeps at most one
    detection per frame.  Tracks found in fewer than :data:`MIN_DETECTION_RATE` of the sampled frames
    are dropped (false positives).  Missed frames are filled by linear interpolation of centre and size,
    then smoothed with a median filter.
    """
    num_frames = len(frames)
    if num_frames == 0:
        return []
    sampled = list(range(0, num_frames, max(1, detect_every)))
    tracks: list[tuple[list[int], list[np.ndarray]]] = []
    for index in sampled:
        claimed: set[int] = set()
        for box in detect_faces(frames[index]):
            candidates = [(float(_centre_distance(box[None], boxes[-1])[0]), number)
                          for number, (_, boxes) in enumerate(tracks) if number not in claimed]
            distance, number = min(candidates, default=(np.inf, -1))
            if distance <= 0.5:
                tracks[number][0].append(index)
                tracks[number][1].append(box)
                claimed.add(number)
            else:
                tracks.append(([index], [box]))
                claimed.add(len(tracks) - 1)
    minimum = max(1, MIN_DETECTION_RATE * len(sampled))
    sampled_mask = np.zeros(num_frames, dtype=bool)
    sampled_mask[sampled] = True
    kept = [_finish_track(num_frames, indices, boxes, sampled_mask) for indices, boxes in tracks
            if len(indices) >= minimum]
    kept.sort(key=lambda track: -float(np.median(track.boxes[:, 2] * track.boxes[:, 3])))
    return kept[:max_faces]


def track_face(frames: np.ndarray, detect_every: int = 1) -> FaceTrack | None:
    """The largest face followed through the clip (see :func:`track_faces`); None when no face is found."""
    tracks = track_faces(frames, detect_every=detect_every, max_faces=1)
    return tracks[0] if tracks else None


def crop_region(frame: np.ndarray, box: np.ndarray | tuple[float, float, float, float], out_height: int,
                out_width: int, pad_value: int = 0) -> np.ndarray:
    """Crop ``box`` (x, y, w, h; may reach outside the frame, padded with ``pad_value``) and resize it."""
    x, y, w, h = (float(v) for v in box)
    left, top = int(round(x)), int(round(y))
    right, bottom = max(left + 1, int(round(x + w))), max(top + 1, int(round(y + h)))
    frame_h, frame_w = frame.shape[:2]
    pad = max(0, -left, -top, right - frame_w, bottom - frame_h)
    if pad:
        pad_width = ((pad, pad), (pad, pad)) + ((0, 0),) * (frame.ndim - 2)
        frame = np.pad(frame, pad_width, mode="constant", constant_values=pad_value)
    crop = frame[top + pad:bottom + pad, left + pad:right + pad]
    interpolation = cv2.INTER_AREA if crop.shape[0] > out_height else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (out_width, out_height), interpolation=interpolation)
