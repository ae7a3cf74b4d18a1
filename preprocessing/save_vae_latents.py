"""Stage 2: encode videos into LTX-Video VAE latents, one .pt + .json per chunk (see docs/vae_latents.md).

    python preprocessing/save_vae_latents.py --inputs ./data/raw_videos --output_dir ./data/vae_latents
    python preprocessing/save_vae_latents.py --transcripts ./data/video_transcripts.json \
        --output_dir ./data/vae_latents --pretrained Lightricks/LTX-Video --dtype bf16 --batch_size 2 --shard 0/4
    torchrun --nproc_per_node 8 preprocessing/save_vae_latents.py --inputs ./data/raw_videos \
        --output_dir ./data/vae_latents        # each rank takes its shard from RANK/WORLD_SIZE
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from avatar_gen.config import add_field_flag, config_from_flags
from avatar_gen.latents.encode import LatentsConfig, encode_dataset
from avatar_gen.utils.cli import add_common_arguments, parse_shard, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Encode videos into LTX-Video VAE latents (chunks of 8k+1 frames).")

    def flag(name: str, help: str, **kwargs) -> None:
        add_field_flag(parser, LatentsConfig, name, help, **kwargs)

    flag("inputs", "a video file or a folder of videos (searched recursively)", type=Path)
    flag("transcripts", "the scraper's video_transcripts.json: encode only the clips it kept (with --inputs: only "
         "those under that folder)", type=Path)
    flag("output_dir", "where <clip>_<k>.pt/.json go", type=Path, required=True)
    flag("pretrained", "hub id, diffusers pipeline folder or VAE folder")
    flag("revision", "hub revision (branch, tag or commit) of --pretrained")
    flag("height", "pixels, multiple of 32 (portrait)", type=int)
    flag("width", "pixels, multiple of 32", type=int)
    flag("num_frames", "frames per chunk, 8k+1", type=int)
    flag("fps", "frame rate the videos are resampled to", type=float)
    flag("stride", "frames between chunk starts (default --num_frames: no overlap)", type=int)
    flag("batch_size", "chunks encoded together", type=int)
    flag("dtype", "VAE precision", choices=("bf16", "fp32"))
    flag("device", "torch device (default cuda when available, else cpu)")
    flag("tiling", "tiled VAE encoding, for large sizes on small GPUs", action="store_true")
    parser.add_argument("--shard", help="I/N: process shard I of N (default RANK/WORLD_SIZE under torchrun, else 0/1)")
    flag("overwrite", "redo chunks that are already complete", action="store_true")
    flag("prefetch", "batches decoded ahead by a worker thread while the VAE encodes; 0 = serial", type=int)
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        shard_index, shard_count = parse_shard(args.shard)
        config = config_from_flags(LatentsConfig, args, device=args.device or _launcher_device(),
                                   shard_index=shard_index, shard_count=shard_count)
        encode_dataset(config)
        return 0

    return run_main(body, verbose=args.verbose)


def _launcher_device() -> str | None:
    """Under torchrun each rank encodes on its own GPU (LOCAL_RANK); otherwise let the library choose."""
    import torch

    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
