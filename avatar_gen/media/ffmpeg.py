"""Locate ffmpeg and run it safely (argument lists, stderr kept for the error message)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from avatar_gen.errors import MediaError

STDERR_TAIL_CHARS = 2000
# ffmpeg prefixes its messages with the component that wrote them: "[out#0/mp4 @ 0x55...] ".
_COMPONENT_PREFIX = re.compile(r"^\[[^\]]*\]\s*")
_DISK_FULL = "No space left on device"


def ffmpeg_error_line(stderr: bytes | str) -> str:
    """ffmpeg's error output as the one line a user needs.

    ffmpeg reports one failure in several lines, and the last one is often generic ("Nothing was written into output
    file"): a full disk is named as such, otherwise the last line is kept.
    """
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [_COMPONENT_PREFIX.sub("", line.strip()) for line in text[-STDERR_TAIL_CHARS:].splitlines() if line.strip()]
    if not lines:
        return "no message"
    if any(_DISK_FULL in line for line in lines):
        return "no space left on device"
    return lines[-1]


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary: ``$AVATAR_GEN_FFMPEG``, else imageio-ffmpeg's pinned static build, else the system's.

    The pinned build comes first so that results do not depend on whichever ffmpeg a machine has on PATH (Debian's
    5.1, installed for Gradio's ffprobe, muxes ``-shortest`` stream copies 80 ms longer than ffmpeg 9).
    """
    explicit = os.environ.get("AVATAR_GEN_FFMPEG")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise MediaError(f"AVATAR_GEN_FFMPEG={explicit} is not an executable file")
        return explicit
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - it is a hard requirement
        imageio_ffmpeg = None
    if imageio_ffmpeg is not None:
        return imageio_ffmpeg.get_ffmpeg_exe()
    system = shutil.which("ffmpeg")
    if system:
        return system
    raise MediaError("ffmpeg not found: install it or `pip install imageio-ffmpeg`")


def ffmpeg_dir() -> Path:
    """A folder holding an executable named ``ffmpeg`` (what yt-dlp's ``ffmpeg_location`` wants).

    imageio-ffmpeg's binary has a versioned name, so we link it as ``ffmpeg`` in a cache folder.
    """
    exe = Path(ffmpeg_exe())
    if exe.name == "ffmpeg":
        return exe.parent
    cache = Path(os.environ.get("AVATAR_GEN_CACHE", Path.home() / ".cache" / "avatar_gen")) / "ffmpeg-bin"
    cache.mkdir(parents=True, exist_ok=True)
    link = cache / "ffmpeg"
    if not (link.exists() and link.resolve() == exe.resolve()):
        tmp_link = cache / f".ffmpeg-{os.getpid()}"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        tmp_link.symlink_to(exe)
        os.replace(tmp_link, link)
    return cache


def run_ffmpeg(args: list[str], input_bytes: bytes | None = None, timeout: float | None = None) -> bytes:
    """Run ``ffmpeg <args>`` (no shell); return stdout; raise MediaError with ffmpeg's reason on failure."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *[os.fspath(a) for a in args]]
    try:
        completed = subprocess.run(command, input=input_bytes, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg timed out after {timeout} s") from None
    if completed.returncode != 0:
        raise MediaError(f"ffmpeg failed (exit {completed.returncode}): {ffmpeg_error_line(completed.stderr)}")
    return completed.stdout
