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
# Files at higher rates (FLAC allows 655 kHz) are resampled by ffmpeg as it decodes, never held at their own rate.
MAX_NATIVE_SAMPLE_RATE = 192_000


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
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]  # an input option: ffmpeg stops reading there, not only writing
    args += ["-i", str(path), "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"]
    raw = run_ffmpeg(args)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def declared_audio_duration(path: str | os.PathLike) -> float | None:
    """Seconds of audio that the file's header declares (libsndfile's, else the container's), without decoding;
    None when the file does not say (e.g. a FLAC stream of unknown length) or is not readable."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        info = None
    if info is not None:
        # libsndfile reports an unknown length as the largest 63-bit number.
        return info.frames / info.samplerate if 0 < info.frames < 2**62 and info.samplerate > 0 else None
    import av

    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.audio[0] if container.streams.audio else None
            if stream is not None and stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, IndexError):
        pass
    return None


def _too_long(path: Path, seconds: float | None, max_seconds: float) -> MediaError:
    lasts = f"lasts {seconds:.1f} s" if seconds is not None else f"lasts more than {max_seconds:g} s"
    return MediaError(f"audio {path} {lasts}; the limit is {max_seconds:g} s")


def _read_with_soundfile(path: Path, max_frames: int | None) -> np.ndarray:
    """Mono float32 at the file's own rate, averaged block by block (only the mono signal is ever held whole)."""
    blocks = [block.mean(axis=1) for block in soundfile.blocks(str(path), blocksize=1 << 15,
                                                                frames=-1 if max_frames is None else max_frames,
                                                                dtype="float32", always_2d=True)]
    return np.concatenate(blocks).astype(np.float32, copy=False) if blocks else np.zeros(0, dtype=np.float32)


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Read a sound file (WAV/FLAC/OGG via libsndfile; MP3/M4A/video via ffmpeg) as mono float32 at ``sample_rate``.

    ``max_seconds`` bounds the memory a file can make us use, whatever its size on disk (a few hundred KB of FLAC
    can hold hours of audio, gigabytes once decoded): a file whose header declares more is refused before decoding,
    and decoding stops just past the limit, so a header that lies (or says nothing) costs no more.  MediaError then
    names the file and the limit.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"audio file not found: {path}")
    if max_seconds is not None:
        declared = declared_audio_duration(path)
        if declared is not None and declared > max_seconds:
            raise _too_long(path, declared, max_seconds)
    try:
        rate = soundfile.info(str(path)).samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        rate = None
    if rate is not None and rate <= MAX_NATIVE_SAMPLE_RATE:
        cap = None if max_seconds is None else int(math.floor(max_seconds * rate)) + 1
        try:
            native = _read_with_soundfile(path, cap)
        except (soundfile.LibsndfileError, RuntimeError, TypeError):
            pass
        else:
            if cap is not None and native.size >= cap:
                raise _too_long(path, None, max_seconds)
            return resample_audio(native, rate, sample_rate)
    # Formats libsndfile does not read (and extreme sample rates, resampled by ffmpeg as it streams).
    # ffmpeg's -t cuts at its own frame granularity: decode half a second past the limit to tell "longer" apart.
    cap_seconds = None if max_seconds is None else max_seconds + 0.5
    try:
        audio = _decode_with_ffmpeg(path, sample_rate, duration=cap_seconds)
    except MediaError as exc:
        raise MediaError(f"cannot read audio from {path}: {str(exc).splitlines()[-1]}") from None
    if max_seconds is not None and audio.size > math.floor(max_seconds * sample_rate):
        raise _too_long(path, None, max_seconds)
    if audio.size == 0:
        raise MediaError(f"no audio in {path}")
    return audio


def extract_audio(video_path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, start: float = 0.0,
                  duration: float | None = None, max_duration: float | None = None) -> np.ndarray:
    """The audio track of a media file as mono float32; with ``duration``, exactly that many seconds
    (zero-padded past the end of the track), so a chunk's audio always covers the chunk's window; with
    ``max_duration``, at most that many seconds (decoding stops there, nothing is padded)."""
    if duration is not None and max_duration is not None:
        raise ValueError("extract_audio: give duration or max_duration, not both")
    audio = _decode_with_ffmpeg(Path(video_path), sample_rate, start=start,
                                duration=duration if duration is not None else max_duration)
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
