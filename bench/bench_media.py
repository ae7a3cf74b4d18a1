"""Media layer throughput: H.264 encode and PyAV decode (+ fps resampling) of a 10 s 512x768 clip."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from avatar_gen.media import read_frames, write_video


def main() -> None:
    fps, seconds, height, width = 25, 10, 768, 512
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    frames = np.stack([np.roll(base, shift=i * 2, axis=1) for i in range(fps * seconds)])
    audio = (0.2 * np.sin(np.arange(16_000 * seconds) / 16_000 * 2 * np.pi * 220)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.mp4"
        started = time.perf_counter()
        write_video(path, frames, fps, audio=audio, preset="veryfast")
        encode_s = time.perf_counter() - started
        read_frames(path, max_frames=1)  # warm-up: codec and thread-pool start-up are not throughput
        started = time.perf_counter()
        decoded = read_frames(path)
        decode_s = time.perf_counter() - started
        started = time.perf_counter()
        resampled = read_frames(path, fps=30)
        resample_s = time.perf_counter() - started
    print(json.dumps({
        "clip": f"{seconds}s {width}x{height}@{fps}",
        "encode_fps": round(len(frames) / encode_s, 1),
        "decode_fps": round(len(decoded) / decode_s, 1),
        "decode_resample_30fps_fps": round(len(resampled) / resample_s, 1),
    }))


if __name__ == "__main__":
    main()
