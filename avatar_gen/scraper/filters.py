"""Clip filters run on a short preview: exactly one face, English speech, speech from the start.

Each filter returns a :class:`FilterResult`; the pipeline rejects the clip with the first failing
result's reason.  Every filter can be switched off (``ScrapeConfig.face_filter`` etc.).

- Faces: OpenCV's frontal-face Haar cascade, which ships inside the ``opencv-python`` wheel
  (``cv2.data.haarcascades``), so it needs no download.  It runs on a few frames sampled evenly over
  the preview; the face count of the clip is the median of the per-frame counts, which tolerates a
  missed detection or a spurious one on a single frame.
- Speech onset: an energy detector over 20 ms windows (see :func:`speech_onset`).
- Language: the ASR back-end's language detection (Whisper); pocketsphinx only knows English, so
  with it every clip counts as English (see :mod:`avatar_gen.scraper.transcribe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from avatar_gen.media.faces import detect_faces

FACE_DETECTION_MAX_SIDE = 480  # px: frames are shrunk to this before detection (speed; faces stay large)
MIN_FACE_FRACTION = 0.08  # a face smaller than this fraction of the frame's short side is background
VAD_WINDOW_SECONDS = 0.020
VAD_MIN_SPEECH_SECONDS = 0.100  # this much continuous loudness counts as speech, not a click
VAD_FLOOR_PERCENTILE = 10  # the quietest windows estimate the background level
VAD_MARGIN_DB = 10.0  # speech is this much louder than the background ...
VAD_MIN_THRESHOLD_DB = -45.0  # ... and at least this loud (dB re full scale) ...
VAD_MAX_THRESHOLD_DB = -30.0  # ... but a clip of nothing but speech still passes at this level


@dataclass
class FilterResult:
    """Outcome of one filter: ``passed``, a reason when not, and measurements for the log."""

    name: str
    passed: bool
    reason: str | None = None
    details: dict = field(default_factory=dict)


class FaceDetector:
    """The project's Haar-cascade face detector (avatar_gen.media.faces) with the scraper's settings."""

    def __init__(self, min_neighbors: int = 5, scale_factor: float = 1.1):
        self.min_neighbors = min_neighbors
        self.scale_factor = scale_factor

    def detect(self, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Faces in an RGB uint8 frame [H, W, 3] as (x, y, width, height) fractions of the frame."""
        height, width = frame.shape[:2]
        boxes = detect_faces(frame, scale=min(1.0, FACE_DETECTION_MAX_SIDE / max(height, width)),
                             min_face_fraction=MIN_FACE_FRACTION, min_face_pixels=16,
                             min_neighbors=self.min_neighbors, scale_factor=self.scale_factor)
        return [(x / width, y / height, w / width, h / height) for x, y, w, h in boxes]


def face_filter(frames: np.ndarray, detector: FaceDetector) -> FilterResult:
    """Pass when the median face count over the sampled ``frames`` [N, H, W, 3] is exactly one.

    ``details["face_box"]`` is the median (x, y, w, h) of single-face frames, as fractions of the frame.
    """
    counts = []
    single_boxes = []
    for frame in frames:
        boxes = detector.detect(frame)
        counts.append(len(boxes))
        if len(boxes) == 1:
            single_boxes.append(boxes[0])
    median_count = int(np.median(counts)) if counts else 0
    details = {"face_counts": counts}
    if single_boxes:
        details["face_box"] = [float(v) for v in np.median(np.array(single_boxes), axis=0)]
    if median_count == 1:
        return FilterResult("face", True, details=details)
    reason = "no face found" if median_count == 0 else f"{median_count} faces found, want exactly one"
    return FilterResult("face", False, f"{reason} (per sampled frame: {counts})", details)


def speech_onset(audio: np.ndarray, sample_rate: int) -> float | None:
    """Time (s) where speech starts in mono float ``audio``, or None when there is none.

    Energy detection: RMS per 20 ms window in dB re full scale; the threshold sits ``VAD_MARGIN_DB``
    above the background (the 10th percentile window), clamped to [-45, -30] dB so that a silent
    track never passes and a track with speech throughout still does.  Speech is the first run of
    windows above it lasting at least 100 ms.
    """
    window = max(1, int(round(VAD_WINDOW_SECONDS * sample_rate)))
    count = len(audio) // window
    if count == 0:
        return None
    frames = np.asarray(audio[:count * window], dtype=np.float64).reshape(count, window)
    level_db = 10.0 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    floor_db = float(np.percentile(level_db, VAD_FLOOR_PERCENTILE))
    threshold_db = min(max(floor_db + VAD_MARGIN_DB, VAD_MIN_THRESHOLD_DB), VAD_MAX_THRESHOLD_DB)
    loud = level_db > threshold_db
    needed = max(1, int(math.ceil(VAD_MIN_SPEECH_SECONDS / VAD_WINDOW_SECONDS)))
    run = 0
    for index, is_loud in enumerate(loud):
        run = run + 1 if is_loud else 0
        if run >= needed:
            return (index - needed + 1) * window / sample_rate
    return None


def speech_start_filter(audio: np.ndarray, sample_rate: int, max_onset: float) -> FilterResult:
    """Pass when speech starts within ``max_onset`` seconds of the clip's start."""
    onset = speech_onset(audio, sample_rate)
    if onset is None:
        return FilterResult("speech", False, f"no speech in the first {len(audio) / sample_rate:.2f} s")
    details = {"speech_onset": round(onset, 3)}
    if onset > max_onset:
        return FilterResult("speech", False, f"speech starts at {onset:.2f} s, later than {max_onset:g} s", details)
    return FilterResult("speech", True, details=details)


def language_filter(detected: tuple[str, float] | None, wanted: str) -> FilterResult:
    """Pass when the detected language code equals ``wanted``; ``detected`` is (code, probability)."""
    if detected is None:
        return FilterResult("language", True, details={"language": wanted, "assumed": True})
    language, probability = detected
    details = {"language": language, "probability": round(float(probability), 4)}
    if language != wanted:
        return FilterResult("language", False, f"detected language {language} (p={probability:.2f}), want {wanted}",
                            details)
    return FilterResult("language", True, details=details)
