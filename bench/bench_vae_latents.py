"""VAE-latents stage throughput with the FULL-SIZE LTX-Video VAE (default diffusers config, random
weights: the same compute as the real one), serial vs overlapped decoding, and peak memory.

    python bench/bench_vae_latents.py                      # CPU: 2 clips x 2 chunks of 9 frames at 128x128, fp32
    python bench/bench_vae_latents.py --device cuda --height 768 --width 512 --num_frames 97 --dtype bf16

Each mode runs the real stage (``encode_dataset``) in its own process, so its peak RSS is its own:
``prefetch=0`` decodes each clip in line, ``prefetch=1`` decodes the next chunks in a worker thread
while the VAE encodes.  ``decode_only`` times decoding + cropping alone: overlap can hide at most that
share of the serial time.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _make_clips(folder: Path, num_clips: int, frames_per_clip: int, fps: float) -> None:
    """Clips at 640x480, a typical downloaded size, so decoding and resizing cost what they cost in real use."""
    from avatar_gen.media import write_video

    rng = np.random.default_rng(0)
    for index in range(num_clips):
        base = rng.integers(0, 255, (480 // 16, 640 // 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
        frames = [np.roll(base, shift=4 * step, axis=1) for step in range(frames_per_clip)]
        write_video(folder / f"clip{index}.mp4", frames, fps, preset="veryfast")


def _time_decoding(videos: Path, args: argparse.Namespace) -> dict:
    """Decode, resample and crop every chunk without encoding: the work that prefetching moves off the VAE's path."""
    from avatar_gen.latents import stream_chunks

    started = time.perf_counter()
    frames = 0
    for path in sorted(videos.glob("*.mp4")):
        for chunk in stream_chunks(path, path.stem, args.fps, args.height, args.width, args.num_frames,
                                   args.num_frames):
            frames += chunk.frames.shape[0]
    seconds = time.perf_counter() - started
    return {"frames": frames, "wall_s": round(seconds, 3), "frames_per_s": round(frames / seconds, 1)}


def _child(args: argparse.Namespace) -> None:
    """One mode: build the full-size VAE, warm it up, run the stage, report figures as JSON."""
    import torch
    from diffusers import AutoencoderKLLTXVideo

    from avatar_gen.config import validate_config
    from avatar_gen.latents import LatentsConfig, LoadedVae, encode_dataset, encode_frames
    from avatar_gen.latents.vae import DTYPES

    device = torch.device(args.device)
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo().to(device=device, dtype=DTYPES[args.dtype]).eval().requires_grad_(False)
    if args.tiling:
        vae.enable_tiling()
    # Warm-up: kernel selection and allocator growth are start-up costs, not throughput.
    encode_frames(vae, torch.zeros(1, 3, args.num_frames, args.height, args.width))
    loaded = LoadedVae(vae=vae, name_or_path="AutoencoderKLLTXVideo() random init", revision=None,
                       dtype_name=args.dtype, device=device)
    config = validate_config(LatentsConfig, dict(
        inputs=Path(args.videos), output_dir=Path(args.output), pretrained="unused", height=args.height,
        width=args.width, num_frames=args.num_frames, fps=args.fps, batch_size=args.batch_size, dtype=args.dtype,
        device=args.device, prefetch=args.prefetch))
    started = time.perf_counter()
    summary = encode_dataset(config, loaded_vae=loaded)
    wall = time.perf_counter() - started
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({
        "frames": summary.frames_encoded, "chunks": summary.chunks_written, "wall_s": round(wall, 2),
        "vae_s": round(summary.encode_seconds, 2), "frames_per_s": round(summary.frames_encoded / wall, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mb": None if peak_gpu is None else round(peak_gpu, 1),
    }))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="fp32")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--num_frames", type=int, default=9)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--chunks_per_clip", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--tiling", action="store_true")
    # internal: one mode in a child process
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--videos", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return

    shared = ["--device", args.device, "--dtype", args.dtype, "--height", str(args.height), "--width", str(args.width),
              "--num_frames", str(args.num_frames), "--fps", str(args.fps), "--batch_size", str(args.batch_size)]
    if args.tiling:
        shared.append("--tiling")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-vae-") as folder:
        videos = Path(folder) / "raw_videos"
        videos.mkdir()
        # One extra frame per clip so that floating-point frame times never cut the last chunk short.
        _make_clips(videos, args.clips, args.chunks_per_clip * args.num_frames + 1, args.fps)
        decode_only = _time_decoding(videos, args)
        for mode, prefetch in (("serial", 0), ("overlapped", 1)):
            completed = subprocess.run(
                [sys.executable, __file__, "--child", "--videos", str(videos), "--output", f"{folder}/{mode}",
                 "--prefetch", str(prefetch), *shared], capture_output=True, text=True, check=False)
            lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
            if completed.returncode != 0 or not lines:
                sys.stderr.write(completed.stderr[-4000:])
                raise SystemExit(f"{mode} run failed (exit {completed.returncode})")
            results[mode] = json.loads(lines[-1])
    print(json.dumps({
        "vae": "AutoencoderKLLTXVideo() default config, random weights",
        "device": args.device, "dtype": args.dtype,
        "chunk": f"{args.num_frames}x{args.height}x{args.width}", "batch_size": args.batch_size,
        "source": f"{args.clips} clips x {args.chunks_per_clip} chunks, 640x480 H.264",
        "decode_only": decode_only, "serial": results["serial"], "overlapped": results["overlapped"],
        "speedup_overlapped": round(results["overlapped"]["frames_per_s"] / results["serial"]["frames_per_s"], 3),
    }))


if __name__ == "__main__":
    main()
