"""Frontal-face detection with OpenCV's bundled Haar cascade (ships inside opencv, nothing to download).

One detector for the whole project: the scraper's one-face filter, inference's face-centred portrait
crop and the evaluation's face track all call :func:`detect_faces`, each with its own size settings.
"""

from __future__ import annotations

import functools
import threading

import cv2
import numpy as np

from avatar_gen.errors import MediaError

FACE_CASCADE_FILE = "haarcascade_frontalface_default.xml"

# CascadeClassifier keeps per-call scratch buffers: one detection at a time across threads.
_DETECTION_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + FACE_CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise MediaError(f"cannot load OpenCV's face cascade from {path}")
    return cascade


def detect_faces(frame: np.ndarray, scale: float = 1.0, min_face_fraction: float = 0.15, min_face_pixels: int = 24,
                 min_neighbors: int = 4, scale_factor: float = 1.1) -> np.ndarray:
    """Frontal faces in a uint8 RGB frame [H, W, 3] as float boxes [N, 4] (x, y, width, height) in the
    frame's pixels, largest first.

    The frame is resized by ``scale`` before detection (speed on large frames, recall on small ones); a
    face whose side is under ``min_face_fraction`` of the resized frame's short side (and under
    ``min_face_pixels``) is ignored as background.
    """
    height, width = frame.shape[:2]
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if abs(scale - 1.0) > 1e-3:
        interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        grey = cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=interpolation)
    grey = cv2.equalizeHist(grey)
    min_side = max(min_face_pixels, int(min_face_fraction * min(grey.shape)))
    with _DETECTION_LOCK:
        found = _cascade().detectMultiScale(grey, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                            minSize=(min_side, min_side))
    if len(found) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    boxes = np.asarray(found, dtype=np.float64)
    boxes[:, [0, 2]] *= width / grey.shape[1]
    boxes[:, [1, 3]] *= height / grey.shape[0]
    return boxes[np.argsort(-boxes[:, 2] * boxes[:, 3], kind="stable")]
