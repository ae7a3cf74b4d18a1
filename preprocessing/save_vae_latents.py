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

from avatar_gen.latents.encode import encode_dataset, make_config
from avatar_gen.latents.vae import DEFAULT_PRETRAINED
from avatar_gen.utils.cli import add_common_arguments, parse_shard, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Encode videos into LTX-Video VAE latents (chunks of 8k+1 frames).")
    parser.add_argument("--inputs", type=Path, help="a video file or a folder of videos (searched recursively)")
    parser.add_argument("--transcripts", type=Path,
                        help="the scraper's video_transcripts.json: encode only the clips it kept "
                             "(with --inputs: only those under that folder)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where <clip>_<k>.pt/.json go")
    parser.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                        help=f"hub id, diffusers pipeline folder or VAE folder (default {DEFAULT_PRETRAINED})")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) of --pretrained")
    parser.add_argument("--height", type=int, default=768, help="pixels, multiple of 32 (default 768, portrait)")
    parser.add_argument("--width", type=int, default=512, help="pixels, multiple of 32 (default 512)")
    parser.add_argument("--num_frames", type=int, default=97, help="frames per chunk, 8k+1 (default 97)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate the videos are resampled to (default 25)")
    parser.add_argument("--stride", type=int, help="frames between chunk starts (default --num_frames: no overlap)")
    parser.add_argument("--batch_size", type=int, default=1, help="chunks encoded together (default 1)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="VAE precision (default bf16)")
    parser.add_argument("--device", help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--tiling", action="store_true", help="tiled VAE encoding, for large sizes on small GPUs")
    parser.add_argument("--shard", help="I/N: process shard I of N (default RANK/WORLD_SIZE under torchrun, else 0/1)")
    parser.add_argument("--overwrite", action="store_true", help="redo chunks that are already complete")
    parser.add_argument("--prefetch", type=int, default=2,
                        help="batches decoded ahead by a worker thread while the VAE encodes; 0 = serial (default 2)")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        shard_index, shard_count = parse_shard(args.shard)
        config = make_config(
            inputs=args.inputs, transcripts=args.transcripts, output_dir=args.output_dir,
            pretrained=args.pretrained, revision=args.revision, height=args.height, width=args.width,
            num_frames=args.num_frames, fps=args.fps, stride=args.stride, batch_size=args.batch_size,
            dtype=args.dtype, device=args.device or _launcher_device(), tiling=args.tiling,
            shard_index=shard_index, shard_count=shard_count, overwrite=args.overwrite, prefetch=args.prefetch,
        )
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
