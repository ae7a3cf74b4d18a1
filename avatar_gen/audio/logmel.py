"""A weight-free speech encoder: log-mel energies per video frame.

Several talking-head models (Wav2Lip, SadTalker's audio-to-coefficient nets) drive the mouth from mel spectrograms
rather than from a pretrained speech model. Here it is the encoder that needs no downloaded weights, so that the toy
world (docs/toy.md) learns lip motion from features that carry the speech itself: a random tiny wav2vec2 or FaceFormer
carries little of it.

The front end is an STFT (25 ms Hann window, 10 ms hop, 512-point FFT) of the 16 kHz speech, a triangular mel
filterbank (HTK mel scale) and ``log10`` of the band energies; :mod:`avatar_gen.audio.framing` then resamples the
100 frames/s to the video rate by time, exactly as it does for wav2vec2. Features are the log energies mapped to
roughly [-1, 1] by fixed constants (no per-frame normalisation): the loudness of a frame is its mean log energy, and a
per-frame LayerNorm would remove exactly that, which is why the audio projection takes ``input_norm: none`` for them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avatar_gen.audio.framing import FrontEndTiming
from avatar_gen.media.audio import SAMPLE_RATE

WINDOW_SAMPLES = 400  # 25 ms at 16 kHz
HOP_SAMPLES = 160  # 10 ms: 100 feature frames per second
FFT_SIZE = 512
MIN_FREQUENCY_HZ = 40.0
MAX_FREQUENCY_HZ = SAMPLE_RATE / 2
LOG_FLOOR = 1e-6  # band energy floor (silence) before the log, for audio normalised to unit variance
# log10 energies of unit-variance speech span about [-6, 2]: map them to about [-1, 1].
LOG_OFFSET = 2.0
LOG_SCALE = 4.0
DEFAULT_MEL_BANDS = 40


def hz_to_mel(frequency: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(frequency, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(num_bands: int, fft_size: int = FFT_SIZE, sample_rate: int = SAMPLE_RATE,
                   min_hz: float = MIN_FREQUENCY_HZ, max_hz: float = MAX_FREQUENCY_HZ) -> np.ndarray:
    """[num_bands, fft_size // 2 + 1] triangular filters, equally spaced on the mel scale, peak 1."""
    bin_hz = np.linspace(0.0, sample_rate / 2, fft_size // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(min_hz), hz_to_mel(max_hz), num_bands + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bin_hz[None]) / np.maximum(upper - centre, 1e-9)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


class LogMelFrontEnd(nn.Module):
    """16 kHz audio [B, samples] -> scaled log-mel energies [B, frames, num_bands] at 100 frames/s.

    Frame ``j`` covers samples ``[160 j, 160 j + 400)`` (no centre padding), so its timing is a strided
    convolution's: :attr:`timing` tells :func:`avatar_gen.audio.framing.resample_to_frames` where it sits.
    """

    def __init__(self, num_bands: int = DEFAULT_MEL_BANDS):
        super().__init__()
        self.num_bands = num_bands
        self.timing = FrontEndTiming(hop_samples=HOP_SAMPLES, receptive_field_samples=WINDOW_SAMPLES)
        self.register_buffer("window", torch.hann_window(WINDOW_SAMPLES, periodic=True), persistent=False)
        self.register_buffer("filterbank", torch.from_numpy(mel_filterbank(num_bands)), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] < WINDOW_SAMPLES:
            raise ValueError(f"audio of {audio.shape[-1]} samples is shorter than one {WINDOW_SAMPLES}-sample window")
        spectrum = torch.stft(audio.float(), n_fft=FFT_SIZE, hop_length=HOP_SAMPLES, win_length=WINDOW_SAMPLES,
                              window=self.window, center=False, return_complex=True)
        power = spectrum.abs().pow(2) / WINDOW_SAMPLES  # [B, bins, frames]
        energies = torch.einsum("mf,bft->btm", self.filterbank, power)
        return (torch.log10(energies + LOG_FLOOR) + LOG_OFFSET) / LOG_SCALE
