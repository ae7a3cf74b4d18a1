"""Media layer: round trips through real H.264/AAC files, resampling, cropping, WAV I/O, ffmpeg errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from avatar_gen.errors import MediaError
from avatar_gen.media import (
    crop_box, extract_audio, ffmpeg_dir, fit_frames, mux_audio, probe_video, read_audio, read_frames, rms_envelope,
    run_ffmpeg, write_video, write_wav,
)
from avatar_gen.media.video import iter_frames

FPS = 25
SECONDS = 3


def _moving_square_clip(num_frames: int, height: int = 64, width: int = 96) -> np.ndarray:
    """Frames whose content encodes the frame index (a square that moves one step per frame)."""
    frames = np.full((num_frames, height, width, 3), 40, dtype=np.uint8)
    for index in range(num_frames):
        x = (index * 3) % (width - 8)
        frames[index, 20:28, x:x + 8] = 230
    return frames


def _tone(seconds: float, sample_rate: int = 16_000, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_video(path, _moving_square_clip(FPS * SECONDS), FPS, audio=_tone(SECONDS))
    return path


def test_round_trip_keeps_frames_fps_size_and_audio(clip):
    info = probe_video(clip)
    assert abs(info.num_frames - FPS * SECONDS) <= 1
    assert info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (96, 64)
    assert info.has_audio and info.audio_sample_rate == 16_000
    assert info.audio_duration == pytest.approx(SECONDS, abs=0.02)
    frames = read_frames(clip)
    assert frames.shape == (FPS * SECONDS, 64, 96, 3)
    audio = extract_audio(clip)
    assert len(audio) / 16_000 == pytest.approx(SECONDS, abs=0.02)


def test_resampling_to_another_fps_follows_the_clock(clip):
    frames_30 = read_frames(clip, fps=30)
    assert abs(len(frames_30) - 30 * SECONDS) <= 1
    times = [t for t, _ in iter_frames(clip, fps=10)]
    assert np.allclose(np.diff(times), 0.1)
    # Frame at t=1.0 s (source frame 25) must show the square where frame 25 drew it.
    window = read_frames(clip, fps=FPS, start=1.0, duration=1.0)
    assert len(window) == FPS
    column = np.argmax(window[0, 24, :, 0] > 150)
    assert column == (25 * 3) % (96 - 8)


def test_extract_audio_window_is_exact_and_padded(clip):
    window = extract_audio(clip, start=2.5, duration=1.0)  # runs 0.5 s past the end: zero-padded
    assert len(window) == 16_000
    assert np.abs(window[-4000:]).max() < 1e-3
    assert np.abs(window[:4000]).max() > 0.1


def test_mux_trims_to_audio(clip, tmp_path):
    speech = tmp_path / "speech.wav"
    write_wav(speech, _tone(2.0, frequency=220))
    out = mux_audio(clip, speech, tmp_path / "muxed.mp4")
    info = probe_video(out)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.has_audio


def test_wav_round_trip_and_resampling(tmp_path):
    tone = _tone(1.0, sample_rate=44_100)
    path = write_wav(tmp_path / "tone.wav", tone, sample_rate=44_100)
    back = read_audio(path, sample_rate=16_000)
    assert len(back) == 16_000
    spectrum = np.abs(np.fft.rfft(back))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second


def test_rms_envelope_is_frame_aligned():
    audio = np.zeros(16_000, dtype=np.float32)
    audio[8000:8640] = 0.5  # a 40 ms burst starting at 0.5 s = frame 12.5 at 25 fps
    envelope = rms_envelope(audio, 16_000, 25)
    assert len(envelope) == 25
    assert set(np.nonzero(envelope)[0]) <= {12, 13}


def test_crop_box_stays_inside_and_keeps_aspect():
    top, left, height, width = crop_box(480, 640, 768, 512, center=(0.98, 0.02))
    assert top >= 0 and left >= 0 and top + height <= 480 and left + width <= 640
    assert width / height == pytest.approx(512 / 768, abs=0.01)
    frames = np.zeros((2, 480, 640, 3), dtype=np.uint8)
    assert fit_frames(frames, 96, 64, center=(0.2, 0.5)).shape == (2, 96, 64, 3)


def test_bad_media_inputs_raise_media_error(tmp_path):
    text_file = tmp_path / "notes.mp4"
    text_file.write_text("this is not a video")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for bad in (text_file, empty, tmp_path / "missing.mp4"):
        with pytest.raises(MediaError):
            probe_video(bad)
        with pytest.raises(MediaError):
            read_frames(bad)
    with pytest.raises(MediaError, match="cannot read audio"):
        read_audio(text_file)


def test_ffmpeg_errors_carry_stderr_and_folder_holds_ffmpeg(tmp_path):
    with pytest.raises(MediaError, match="ffmpeg failed"):
        run_ffmpeg(["-i", str(tmp_path / "nope.mp4"), str(tmp_path / "out.mp4")])
    assert os.access(ffmpeg_dir() / "ffmpeg", os.X_OK)


def test_failed_write_leaves_no_output(tmp_path):
    target = tmp_path / "out.mp4"
    bad_frames = [np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)]
    with pytest.raises(ValueError):
        write_video(target, bad_frames, 25)
    assert not target.exists()
    assert not list(tmp_path.iterdir())
