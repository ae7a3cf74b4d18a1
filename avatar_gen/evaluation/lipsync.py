"""Offline lip-sync score: mouth opening per frame vs. speech loudness, over a lag search.

Needs no downloaded weights.  Per frame, the face is tracked with OpenCV's Haar cascade
(:mod:`avatar_gen.evaluation.faces`) and the mouth region is measured as its *darkness mass*: the mean,
over a fixed region in the lower middle of the face box, of how much darker than the face's skin each
pixel is (below :data:`DARK_RATIO` x skin level).  An open mouth shows the dark cavity, so the mass
rises with the opening; static dark parts (beard, nostril shadow) only add a constant, which a
correlation ignores.  The loudness is :func:`avatar_gen.media.rms_envelope` of the 16 kHz speech.

Both signals are high-passed (a centred 1 s moving average is subtracted) so that the score reflects
syllable-scale co-variation rather than "speaking vs. silent" spans, then correlated (Pearson) at
every audio delay in ``-max_lag .. +max_lag`` frames.

Lag sign, used throughout the project: a lag of ``+k`` pairs video frame ``t`` with loudness frame
``t + k``, i.e. the sound comes ``k`` frames *after* the mouth movement (audio late).

Limits (documented in docs/evaluation.md): a face box is not a landmark fit, so the region is only
approximately the mouth (head turns, beards, strong lighting and teeth visibility all disturb it);
the measure is the area of a dark cavity, so a mouth that opens without showing darkness (closed
lips that pout, a whisper) scores low.  It compares *timing*, not the shape of phonemes: use SyncNet
(LSE-C/D) where weights are available.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar_gen.evaluation.faces import FaceTrack, crop_region
from avatar_gen.media.audio import SAMPLE_RATE, rms_envelope

# Mouth region as fractions of the Haar face box (x0, x1, y0, y1): the Haar box spans roughly brows to
# chin, the mouth sits in the lower third, centred.
MOUTH_REGION = (0.25, 0.75, 0.62, 0.98)
MOUTH_SIZE = (32, 48)  # (height, width) the mouth region is resampled to, so the measure is size-independent
SKIN_PERCENTILE = 60  # of the central face area's grey levels: the skin, robust to eyes/mouth/hair
DARK_RATIO = 0.6  # pixels darker than this fraction of the skin level count as cavity
DEFAULT_MAX_LAG = 15  # frames
HIGHPASS_SECONDS = 1.0
MIN_OVERLAP_FRAMES = 10  # a lag whose overlap is shorter than this gets no correlation


def mouth_opening(frames: np.ndarray, track: FaceTrack) -> np.ndarray:
    """Mouth-opening proxy per frame, float [T] (darkness mass of the mouth region, unitless >= 0).

    The region has a fixed size (the clip's median face size) that follows the smoothed face centre,
    so box-size jitter of the detector does not change the measured area.
    """
    widths, heights = track.boxes[:, 2], track.boxes[:, 3]
    face_w, face_h = float(np.median(widths)), float(np.median(heights))
    x0, x1, y0, y1 = MOUTH_REGION
    openings = np.zeros(len(frames), dtype=np.float64)
    for index, (frame, box) in enumerate(zip(frames, track.boxes)):
        centre_x, centre_y = box[0] + box[2] / 2, box[1] + box[3] / 2
        face_box = (centre_x - face_w / 2, centre_y - face_h / 2, face_w, face_h)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        face = crop_region(grey, face_box, 64, 64).astype(np.float64)
        skin_level = max(float(np.percentile(face[8:56, 12:52], SKIN_PERCENTILE)), 1.0)
        mouth_box = (face_box[0] + x0 * face_w, face_box[1] + y0 * face_h, (x1 - x0) * face_w, (y1 - y0) * face_h)
        mouth = crop_region(grey, mouth_box, MOUTH_SIZE[0], MOUTH_SIZE[1]).astype(np.float64)
        openings[index] = np.clip(DARK_RATIO - mouth / skin_level, 0.0, None).mean()
    return openings


def highpass(signal: np.ndarray, window_frames: int) -> np.ndarray:
    """Subtract a centred moving average (edge-replicated) of ``window_frames`` frames."""
    signal = np.asarray(signal, dtype=np.float64)
    if window_frames < 2 or len(signal) < 3:
        return signal - signal.mean()
    half = window_frames // 2
    padded = np.pad(signal, (half, half), mode="edge")
    kernel = np.ones(2 * half + 1) / (2 * half + 1)
    return signal - np.convolve(padded, kernel, mode="valid")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-12 else float("nan")


def lagged_correlation(video_signal: np.ndarray, audio_signal: np.ndarray, max_lag: int = DEFAULT_MAX_LAG,
                       min_overlap: int = MIN_OVERLAP_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``video_signal[t]`` with ``audio_signal[t + lag]`` for lag in -max_lag..max_lag.

    Returns ``(lags int [2*max_lag+1], correlations float [2*max_lag+1])``; NaN where the overlap is
    shorter than ``min_overlap`` frames or a signal is constant over it.
    """
    length = min(len(video_signal), len(audio_signal))
    video_signal, audio_signal = np.asarray(video_signal[:length]), np.asarray(audio_signal[:length])
    lags = np.arange(-max_lag, max_lag + 1)
    correlations = np.full(len(lags), np.nan)
    for position, lag in enumerate(lags):
        video_part = video_signal[max(0, -lag):length - max(0, lag)]
        audio_part = audio_signal[max(0, lag):length - max(0, -lag)]
        if len(video_part) >= min_overlap:
            correlations[position] = _pearson(video_part, audio_part)
    return lags, correlations


@dataclass(frozen=True)
class OfflineSyncResult:
    """Offline lip-sync figures of one clip.

    ``score``: correlation at lag 0 (what a viewer sees; the headline number, in [-1, 1]);
    ``best_lag``: audio delay in frames with the highest correlation (+ = sound late);
    ``best_correlation``: the correlation there; ``confidence``: best minus the median over all lags
    (like SyncNet's LSE-C: how clearly one lag stands out).
    """

    score: float
    best_lag: int
    best_correlation: float
    confidence: float
    lags: list[int]
    correlations: list[float | None]
    mouth_signal_std: float


def offline_sync_from_signals(mouth_signal: np.ndarray, loudness: np.ndarray, fps: float,
                              max_lag: int = DEFAULT_MAX_LAG) -> OfflineSyncResult:
    """Score already-measured per-frame signals (both [T] at ``fps``); ValueError when no lag is scorable."""
    window = max(3, int(round(HIGHPASS_SECONDS * fps)))
    lags, correlations = lagged_correlation(highpass(mouth_signal, window), highpass(loudness, window), max_lag)
    if not np.isfinite(correlations).any():
        raise ValueError("no lag could be scored (clip too short, or mouth or loudness constant)")
    best = int(np.nanargmax(correlations))
    at_zero = float(correlations[max_lag])
    return OfflineSyncResult(
        score=at_zero, best_lag=int(lags[best]), best_correlation=float(correlations[best]),
        confidence=float(correlations[best] - np.nanmedian(correlations)),
        lags=[int(lag) for lag in lags],
        correlations=[float(c) if np.isfinite(c) else None for c in correlations],
        mouth_signal_std=float(np.std(mouth_signal)),
    )


def offline_sync_at_zero(frames: np.ndarray, track: FaceTrack, audio_16k: np.ndarray, fps: float,
                         max_lag: int = DEFAULT_MAX_LAG) -> float | None:
    """The headline offline score (correlation at lag 0) of uint8 frames [T, H, W, 3] whose face is ``track`` against
    16 kHz speech (its loudness over the same T frames; frames past its end get silence); None when no lag can be
    scored.  One track serves several speeches (the control scores a video against another clip's speech)."""
    loudness = rms_envelope(audio_16k, SAMPLE_RATE, fps, len(frames))
    try:
        return offline_sync_from_signals(mouth_opening(frames, track), loudness, fps, max_lag).score
    except ValueError:
        return None
