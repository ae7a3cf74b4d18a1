"""Video I/O: probe and decode with PyAV, encode H.264 (yuv420p) + AAC with ffmpeg.

Frames are uint8 RGB arrays [T, H, W, 3].  Frame i of a video resampled to ``fps`` is the source
frame on screen at time ``start + i / fps`` (sample-and-hold, like ffmpeg's fps filter).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avatar_gen.errors import MediaError
from avatar_gen.media.audio import SAMPLE_RATE, write_wav
from avatar_gen.media.ffmpeg import ffmpeg_error_line, ffmpeg_exe, run_ffmpeg
from avatar_gen.utils.io import atomic_path, remove_orphaned_temporaries

# Tolerance when comparing frame timestamps (seconds): far below one frame at any real fps.
TIME_EPSILON = 1e-4


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float  # seconds of video
    has_audio: bool
    audio_sample_rate: int | None
    audio_duration: float | None  # seconds of audio, None without an audio stream


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"video not found: {path}")
    if not path.is_file():
        raise MediaError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"empty file: {path}")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"not a readable video: {path} ({exc.__class__.__name__}: {exc})") from None


def _stream_duration(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count and audio facts of a video file; MediaError when it has no video."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"no video stream in {path}")
        video = container.streams.video[0]
        rate = video.average_rate or video.guessed_rate or video.base_rate
        if not rate:
            raise MediaError(f"cannot tell the frame rate of {path}")
        fps = float(rate)
        duration = _stream_duration(video, container) or 0.0
        num_frames = int(video.frames) if video.frames else int(round(duration * fps))
        if video.frames:
            duration = max(duration, num_frames / fps) if duration == 0 else duration
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=str(path), width=int(video.codec_context.width), height=int(video.codec_context.height),
            fps=fps, num_frames=num_frames, duration=duration, has_audio=audio is not None,
            audio_sample_rate=int(audio.sample_rate) if audio is not None else None,
            audio_duration=_stream_duration(audio, container) if audio is not None else None,
        )


def iter_frames(path: str | os.PathLike, fps: float | None = None, start: float = 0.0,
                duration: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time, frame)`` pairs; with ``fps`` the video is resampled to that rate from ``start``.

    Without ``fps`` every decoded frame is yielded with its own timestamp.  Decoding errors midway
    end the iteration with MediaError (the frames before it were yielded).
    """
    end = None if duration is None else start + duration
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"no video stream in {path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        frame_period = 1.0 / float(rate) if rate else 0.04
        time_base = float(stream.time_base)
        if start > 0:
            container.seek(int(start / time_base), stream=stream, backward=True, any_frame=False)
        previous: np.ndarray | None = None
        previous_time = 0.0
        next_index = 0
        try:
            for frame in container.decode(stream):
                frame_time = float(frame.pts * time_base) if frame.pts is not None else previous_time + frame_period
                image = frame.to_ndarray(format="rgb24")
                if fps is None:
                    if frame_time + TIME_EPSILON >= start and (end is None or frame_time < end - TIME_EPSILON):
                        yield frame_time, image
                    previous_time = frame_time
                    continue
                # Emit every target time that falls before this source frame: the previous frame was on screen.
                while True:
                    target_time = start + next_index / fps
                    if end is not None and target_time >= end - TIME_EPSILON:
                        return
                    if target_time + TIME_EPSILON >= frame_time:
                        break
                    yield target_time, image if previous is None else previous
                    next_index += 1
                previous, previous_time = image, frame_time
        except av.error.FFmpegError as exc:
            raise MediaError(f"decoding failed in {path} after {next_index} frames: {exc}") from None
        if fps is None or previous is None:
            return
        video_end = previous_time + frame_period
        stop = video_end if end is None else min(end, video_end)
        while start + next_index / fps < stop - TIME_EPSILON:
            yield start + next_index / fps, previous
            next_index += 1


def read_frames(path: str | os.PathLike, fps: float | None = None, start: float = 0.0,
                duration: float | None = None, max_frames: int | None = None) -> np.ndarray:
    """All frames (optionally resampled to ``fps``, from ``start`` for ``duration`` s) as uint8 [T, H, W, 3]."""
    frames = []
    for _, frame in iter_frames(path, fps=fps, start=start, duration=duration):
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise MediaError(f"no frames decoded from {path}")
    return np.stack(frames)


def _fps_text(fps: float) -> str:
    fraction = Fraction(fps).limit_denominator(1001)
    return f"{fraction.numerator}/{fraction.denominator}"


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray] | np.ndarray, fps: float,
                audio: np.ndarray | str | os.PathLike | None = None, sample_rate: int = SAMPLE_RATE,
                crf: int = 18, preset: str = "medium") -> Path:
    """Encode RGB frames to an H.264 (yuv420p) MP4, with optional AAC audio, atomically.

    ``audio`` is a mono float array at ``sample_rate`` or a path to a sound file; it is muxed as is
    (the caller decides the lengths).  Odd frame sizes are padded by one pixel (yuv420p needs even sides).
    A temporary file that an earlier writer of ``path`` left when it was killed is removed first.
    """
    path = Path(path)
    remove_orphaned_temporaries(path)
    iterator = iter(frames)
    try:
        first = np.asarray(next(iterator))
    except StopIteration:
        raise MediaError(f"write_video {path}: no frames") from None
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [H, W, 3], got {first.dtype} {first.shape}")
    height, width = first.shape[:2]
    with contextlib.ExitStack() as stack:
        audio_args: list[str] = []
        if audio is not None:
            if isinstance(audio, (str, os.PathLike)):
                audio_file = Path(audio)
            else:
                temp_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="avatar-audio-"))
                audio_file = write_wav(Path(temp_dir) / "audio.wav", np.asarray(audio, np.float32), sample_rate)
            audio_args = ["-i", str(audio_file), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        tmp = stack.enter_context(atomic_path(path))
        stderr_file = stack.enter_context(tempfile.TemporaryFile())
        command = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", _fps_text(fps),
            "-i", "pipe:0",
            *audio_args,
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(tmp),
        ]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr_file)
        try:
            process.stdin.write(np.ascontiguousarray(first).tobytes())
            for frame in iterator:
                frame = np.asarray(frame)
                if frame.shape != first.shape or frame.dtype != np.uint8:
                    raise ValueError(f"frame shape {frame.shape} {frame.dtype} differs from the first {first.shape}")
                process.stdin.write(np.ascontiguousarray(frame).tobytes())
            process.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            process.kill()
            process.wait()
            raise
        returncode = process.wait()
        if returncode != 0:
            stderr_file.seek(0)
            raise MediaError(f"ffmpeg could not write {path} (exit {returncode}): "
                             f"{ffmpeg_error_line(stderr_file.read())}")
    return path


def mux_audio(video_path: str | os.PathLike, audio_path: str | os.PathLike, output_path: str | os.PathLike,
              trim_to_audio: bool = True) -> Path:
    """Copy the video stream of ``video_path`` and add ``audio_path`` as AAC; optionally cut to the audio's length."""
    output_path = Path(output_path)
    args = ["-y", "-i", str(video_path), "-i", str(audio_path), "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"]
    if trim_to_audio:
        args.append("-shortest")
    with atomic_path(output_path) as tmp:
        run_ffmpeg([*args, "-f", "mp4", str(tmp)])
    return output_path
