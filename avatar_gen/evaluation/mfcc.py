"""MFCC features compatible with ``python_speech_features.mfcc`` (what SyncNet was trained on).

SyncNet's audio stream reads 13 MFCCs at 100 Hz (25 ms windows, 10 ms hop) computed by
``python_speech_features.mfcc`` with its defaults on int16-scaled 16 kHz samples.  That package is
small but unmaintained, so the same computation is written here with numpy/scipy:
pre-emphasis 0.97, rectangular 400-sample frames (zero-padded at the end), |rfft(512)|^2 / 512,
26 triangular mel filters (0 Hz .. Nyquist), log, orthonormal DCT-II, lifter 22, and coefficient 0
replaced by the log of the frame's total power-spectrum energy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct

MFCC_SAMPLE_RATE = 16_000  # Hz
MFCC_WINDOW_SECONDS = 0.025
MFCC_HOP_SECONDS = 0.010  # 100 MFCC frames per second, 4 per video frame at 25 fps
MFCC_NUM_COEFFICIENTS = 13
MFCC_NUM_FILTERS = 26
MFCC_FFT_SIZE = 512
PRE_EMPHASIS = 0.97
CEPSTRAL_LIFTER = 22
INT16_SCALE = 32768.0  # SyncNet read its WAV with scipy.io.wavfile: int16 sample values, not [-1, 1]


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray | float:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank(num_filters: int = MFCC_NUM_FILTERS, fft_size: int = MFCC_FFT_SIZE,
                   sample_rate: int = MFCC_SAMPLE_RATE, low_hz: float = 0.0,
                   high_hz: float | None = None) -> np.ndarray:
    """Triangular mel filters on FFT bins, [num_filters, fft_size // 2 + 1] (python_speech_features' binning)."""
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mel_points = np.linspace(_hz_to_mel(low_hz), _hz_to_mel(high_hz), num_filters + 2)
    bins = np.floor((fft_size + 1) * _mel_to_hz(mel_points) / sample_rate)
    filters = np.zeros((num_filters, fft_size // 2 + 1))
    for index in range(num_filters):
        left, centre, right = bins[index], bins[index + 1], bins[index + 2]
        for fft_bin in range(int(left), int(centre)):
            filters[index, fft_bin] = (fft_bin - left) / (centre - left)
        for fft_bin in range(int(centre), int(right)):
            filters[index, fft_bin] = (right - fft_bin) / (right - centre)
    return filters


def frame_signal(signal: np.ndarray, frame_length: int, frame_step: int) -> np.ndarray:
    """Overlapping frames [num_frames, frame_length]; the tail is zero-padded to a whole frame."""
    length = len(signal)
    num_frames = 1 if length <= frame_length else 1 + int(math.ceil((length - frame_length) / frame_step))
    padded = np.zeros((num_frames - 1) * frame_step + frame_length)
    padded[:length] = signal
    starts = np.arange(num_frames)[:, None] * frame_step
    return padded[starts + np.arange(frame_length)[None, :]]


def mfcc(audio: np.ndarray, sample_rate: int = MFCC_SAMPLE_RATE, int16_scale: bool = True) -> np.ndarray:
    """MFCCs of mono ``audio`` as float64 [num_frames, 13], one row per 10 ms.

    ``audio`` is float in [-1, 1]; with ``int16_scale`` it is first multiplied by 32768 so that
    coefficient 0 (log energy) matches what SyncNet saw from an int16 WAV file.
    """
    signal = np.asarray(audio, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"mfcc wants mono audio [samples], got shape {signal.shape}")
    if signal.size == 0:
        raise ValueError("mfcc: empty audio")
    if int16_scale:
        signal = signal * INT16_SCALE
    emphasised = np.append(signal[0], signal[1:] - PRE_EMPHASIS * signal[:-1])
    frames = frame_signal(emphasised, _round_half_up(MFCC_WINDOW_SECONDS * sample_rate),
                          _round_half_up(MFCC_HOP_SECONDS * sample_rate))
    power = np.square(np.abs(np.fft.rfft(frames, MFCC_FFT_SIZE))) / MFCC_FFT_SIZE
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    filter_energies = power @ mel_filterbank(sample_rate=sample_rate).T
    filter_energies = np.where(filter_energies == 0, eps, filter_energies)
    cepstra = dct(np.log(filter_energies), type=2, axis=1, norm="ortho")[:, :MFCC_NUM_COEFFICIENTS]
    lift = 1.0 + (CEPSTRAL_LIFTER / 2.0) * np.sin(np.pi * np.arange(MFCC_NUM_COEFFICIENTS) / CEPSTRAL_LIFTER)
    cepstra = cepstra * lift
    cepstra[:, 0] = np.log(energy)
    return cepstra
