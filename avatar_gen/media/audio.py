"""Speech audio: read any common format, resample, write 16 kHz mono WAV, loudness envelopes.

Audio arrays are float32 mono in [-1, 1]; sample rates are in Hz; times in seconds.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from avatar_gen.errors import MediaError
from avatar_gen.media.ffmpeg import run_ffmpeg
from avatar_gen.utils.io import atomic_path

SAMPLE_RATE = 16_000  # Hz: what wav2vec 2.0, Whisper and FaceFormer expect


def resample_audio(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of a mono float array."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    ratio = Fraction(rate_out, rate_in).limit_denominator(1000)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def _decode_with_ffmpeg(path: Path, sample_rate: int, start: float = 0.0, duration: float | None = None) -> np.ndarray:
    args: list[str] = []
    if start > 0:
        args += ["-ss", f"{start:.6f}"]
    args += ["-i", str(path)]
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    args += ["-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"]
    raw = run_ffmpeg(args)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a sound file (WAV/FLAC/OGG via libsndfile; MP3/M4A/video via ffmpeg) as mono float32 at ``sample_rate``."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"audio file not found: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        audio = data.mean(axis=1)
        return resample_audio(audio, rate, sample_rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        pass
    try:
        audio = _decode_with_ffmpeg(path, sample_rate)
    except MediaError as exc:
        raise MediaError(f"cannot read audio from {path}: {str(exc).splitlines()[-1]}") from None
    if audio.size == 0:
        raise MediaError(f"no audio in {path}")
    return audio


def extract_audio(video_path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, start: float = 0.0,
                  duration: float | None = None) -> np.ndarray:
    """The audio track of a media file as mono float32; with ``duration``, exactly that many seconds
    (zero-padded past the end of the track), so a chunk's audio always covers the chunk's window."""
    audio = _decode_with_ffmpeg(Path(video_path), sample_rate, start=start, duration=duration)
    if duration is not None:
        wanted = int(round(duration * sample_rate))
        if audio.size < wanted:
            audio = np.pad(audio, (0, wanted - audio.size))
        audio = audio[:wanted]
    return audio


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono 16-bit PCM WAV atomically."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"write_wav wants mono audio [samples], got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("write_wav: audio contains NaN or inf")
    path = Path(path)
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return path


def rms_envelope(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int | None = None) -> np.ndarray:
    """Loudness per video frame: RMS of the samples in a one-frame window centred on frame i's time i/fps.

    Returns float32 [num_frames]; frames past the end of the audio get 0.
    """
    if num_frames is None:
        num_frames = int(math.floor(len(audio) / sample_rate * fps + 1e-6))
    half_window = 0.5 * sample_rate / fps
    envelope = np.zeros(num_frames, dtype=np.float32)
    squared = np.concatenate([[0.0], np.cumsum(np.asarray(audio, dtype=np.float64) ** 2)])
    for frame in range(num_frames):
        centre = frame * sample_rate / fps
        lo = int(max(0, round(centre - half_window)))
        hi = int(min(len(audio), round(centre + half_window)))
        if hi > lo:
            envelope[frame] = math.sqrt((squared[hi] - squared[lo]) / (hi - lo))
    return envelope
