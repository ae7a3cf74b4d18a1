"""Small files that decode into huge ones, and a harness that measures what reading them costs.

Builders write the bombs in a few hundred milliseconds and a few hundred KB: FLAC streams of constant blocks (hours of
audio in ~100 KB), a grey PNG of 10000x10000 px (~100 KB), and videos made by stream-copying a tiny H.264 segment or
one PNG frame many times (no re-encoding).

:func:`run_measured` runs Python code in a fresh interpreter and reports, per case, what it returned or raised, what
it wrote to stderr, and how far its peak resident memory rose above the memory it held before the case (VmHWM, reset
per case through ``/proc/self/clear_refs``).  A watchdog thread ends the child when a case grows past a ceiling, so a
regression fails the test instead of exhausting the machine.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


# ------------------------------------------------------------------------------------------------ audio

def _crc_table(polynomial: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ polynomial) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return table


_CRC8, _CRC16 = _crc_table(0x07, 8), _crc_table(0x8005, 16)  # FLAC's header and frame checksums


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _utf8_number(number: int) -> bytes:
    """FLAC's frame number coding (UTF-8 style, up to 36 bits)."""
    if number < 0x80:
        return bytes([number])
    length = 2
    while number >= 1 << (5 * length + 1):
        length += 1
    tail = []
    for _ in range(length - 1):
        tail.insert(0, 0x80 | (number & 0x3F))
        number >>= 6
    return bytes([((0xFF << (8 - length)) & 0xFF) | number] + tail)


def flac_bomb(path: Path, seconds: float, sample_rate: int = 48_000, declared_samples: int | None = None,
              level: int = 3000) -> Path:
    """A valid mono 16-bit FLAC of ``seconds`` of a constant level: 65535-sample frames of one CONSTANT subframe,
    about 12 bytes each (3 h at 48 kHz is ~120 KB).  ``declared_samples`` overrides the length STREAMINFO declares
    (0 = unknown), to make a header that lies."""
    block = 65535
    frames = int(seconds * sample_rate) // block
    declared = frames * block if declared_samples is None else declared_samples
    info = struct.pack(">HH", block, block) + bytes(6)
    info += ((sample_rate << 44) | (15 << 36) | declared).to_bytes(8, "big") + bytes(16)  # mono, 16 bit, no MD5
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    subframe = bytes([0x00]) + struct.pack(">h", level)
    for number in range(frames):
        # Sync, fixed blocking; block size in a 16-bit field, rate from STREAMINFO; mono, 16 bit.
        header = bytes([0xFF, 0xF8, 0x70, 0x08]) + _utf8_number(number) + struct.pack(">H", block - 1)
        frame = header + bytes([_crc8(header)]) + subframe
        out += frame + struct.pack(">H", _crc16(frame))
    path.write_bytes(bytes(out))
    return path


# ------------------------------------------------------------------------------------------------ video

def grey_png(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit grey PNG of width x height black pixels, compressed row by row (never held whole)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _ffmpeg(*args: str) -> None:
    from avatar_gen.media.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def png_video(path: Path, png: Path, fps: float, seconds: float) -> Path:
    """A video repeating one PNG frame (stream copy: no decoding or encoding)."""
    _ffmpeg("-loop", "1", "-framerate", f"{fps:g}", "-t", f"{seconds:g}", "-i", str(png), "-c", "copy", str(path))
    return path


def long_static_video(path: Path, seconds: float, size: int = 256, fps: float = 25.0,
                      segment_seconds: float = 10.0) -> Path:
    """A static H.264 clip of ``seconds``: one short segment encoded, then repeated by stream copy."""
    segment = path.with_name(f"{path.stem}-segment.mp4")
    _ffmpeg("-f", "lavfi", "-i", f"color=gray:s={size}x{size}:r={fps:g}", "-t", f"{segment_seconds:g}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "1000", "-threads", "1", str(segment))
    loops = max(1, int(round(seconds / segment_seconds)))
    _ffmpeg("-stream_loop", str(loops - 1), "-i", str(segment), "-c", "copy", str(path))
    segment.unlink()
    return path


# ------------------------------------------------------------------------------------------------ measuring

_CHILD = r'''
import contextlib, io, json, os, sys, threading, time, traceback

def _status(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

CEILING = int(sys.argv[1])
_state = {"baseline": _status("VmRSS"), "case": None}

def _watchdog():
    while True:
        if _state["case"] is not None and _status("VmRSS") - _state["baseline"] > CEILING:
            sys.__stdout__.write("\nRESULTS " + json.dumps({_state["case"]: {"exceeded_ceiling": True,
                                 "peak_growth_mb": (_status("VmHWM") - _state["baseline"]) / 2**20}}) + "\n")
            sys.__stdout__.flush()
            os._exit(3)
        time.sleep(0.02)

threading.Thread(target=_watchdog, daemon=True).start()

SETUP

results = {}
for _name, _case in CASES:
    _stderr = io.StringIO()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak (VmHWM) starts again from the memory held now
    _state["baseline"] = _status("VmRSS")
    _state["case"] = _name
    outcome = {}
    try:
        with contextlib.redirect_stderr(_stderr):
            outcome["returned"] = repr(_case())
    except BaseException as exc:
        outcome["raised"] = type(exc).__name__
        outcome["message"] = str(exc)
    outcome["peak_growth_mb"] = (_status("VmHWM") - _state["baseline"]) / 2**20
    outcome["stderr"] = _stderr.getvalue()
    _state["case"] = None
    results[_name] = outcome
print("\nRESULTS " + json.dumps(results))
'''


def run_measured(setup: str, ceiling_mb: int = 2000, timeout: float = 300, cwd: Path = REPO_ROOT) -> dict:
    """Run ``setup`` (Python source that imports what it needs and defines ``CASES``, a list of (name, callable))
    in a fresh interpreter; return ``{name: {"returned" | "raised"+"message", "stderr", "peak_growth_mb"}}``.

    A case whose resident memory grows past ``ceiling_mb`` ends the child: its entry then holds
    ``exceeded_ceiling: True`` and the cases after it are missing.
    """
    code = _CHILD.replace("SETUP", textwrap.dedent(setup))
    completed = subprocess.run([sys.executable, "-c", code, str(ceiling_mb * MB)], cwd=cwd, capture_output=True,
                               text=True, timeout=timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULTS ")]
    if not lines:
        raise AssertionError(f"measuring child failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULTS "):])


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line of a stage's stderr; AssertionError for none, several, or a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]
