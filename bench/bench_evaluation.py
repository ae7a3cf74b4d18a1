"""Evaluation: offline lip-sync separation on synthetic clips (true vs. shifted vs. swapped speech) and costs.

Figures: mean offline score at lag 0 for the true speech, the speech delayed by 5 frames and another clip's
speech; mean |best lag - injected delay|; CPU seconds per clip of the full per-clip evaluation (face tracking,
mouth signal, lag search, flicker, drift); SyncNet (full size, random weights) windows per second; SSIM frames
per second at 512x768.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avatar_gen.evaluation import SyncNet, compute_lse, evaluate_clip
from avatar_gen.evaluation.quality import ssim
from avatar_gen.media import SAMPLE_RATE, extract_audio, read_frames, write_video
from avatar_gen.synthetic import generate_dataset

FPS = 25
DELAY_FRAMES = 5


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    return np.pad(audio, (0, max(0, length - len(audio))))[:length]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clips = generate_dataset(folder / "data", num_clips=4, seed=1, max_seconds=6.0)
        scores: dict[str, list[float]] = {"true": [], "delayed": [], "swapped": []}
        lag_errors, cpu_seconds, frames_seen = [], 0.0, 0
        for index, clip in enumerate(clips):
            frames = read_frames(clip.video_path, fps=FPS)
            length = len(frames) * SAMPLE_RATE // FPS
            audio = _fit(extract_audio(clip.video_path), length)
            other = _fit(extract_audio(clips[(index + 1) % len(clips)].video_path), length)
            shift = DELAY_FRAMES * SAMPLE_RATE // FPS
            variants = {"true": clip.video_path, "delayed": folder / f"{index}_delayed.mp4",
                        "swapped": folder / f"{index}_swapped.mp4"}
            delayed = np.concatenate([np.zeros(shift, np.float32), audio])[:length]
            write_video(variants["delayed"], frames, FPS, audio=delayed)
            write_video(variants["swapped"], frames, FPS, audio=other)
            for name, path in variants.items():
                started = time.process_time()
                record, _ = evaluate_clip(path)
                cpu_seconds += time.process_time() - started
                frames_seen += len(frames)
                scores[name].append(record["offline_sync"]["score"])
                if name == "delayed":
                    lag_errors.append(abs(record["offline_sync"]["best_lag"] - DELAY_FRAMES))

    torch.manual_seed(0)
    model = SyncNet().eval()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (30, 224, 224, 3), dtype=np.uint8)
    speech = (0.1 * rng.standard_normal(30 * SAMPLE_RATE // FPS)).astype(np.float32)
    started = time.perf_counter()
    result = compute_lse(model, crops, speech)
    syncnet_windows_per_s = result.num_windows / (time.perf_counter() - started)

    frame = rng.integers(0, 255, (768, 512, 3), dtype=np.uint8)
    other_frame = rng.integers(0, 255, (768, 512, 3), dtype=np.uint8)
    started = time.perf_counter()
    for _ in range(5):
        ssim(frame, other_frame)
    ssim_fps = 5 / (time.perf_counter() - started)

    print(json.dumps({
        "clips": len(clips),
        "offline_score_true": round(float(np.mean(scores["true"])), 3),
        "offline_score_delayed_5": round(float(np.mean(scores["delayed"])), 3),
        "offline_score_swapped": round(float(np.mean(scores["swapped"])), 3),
        "mean_abs_lag_error_frames": round(float(np.mean(lag_errors)), 2),
        "cpu_s_per_100_frames": round(100 * cpu_seconds / frames_seen, 2),
        "syncnet_windows_per_s": round(syncnet_windows_per_s, 2),
        "ssim_fps_512x768": round(ssim_fps, 1),
    }))


if __name__ == "__main__":
    main()
