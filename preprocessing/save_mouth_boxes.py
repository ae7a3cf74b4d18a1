"""Optional stage after the VAE latents: where each clip's mouth is, for a mouth-weighted training loss
(``flow.mouth_loss_weight`` with ``data.mouth_boxes``; see docs/training.md and docs/vae_latents.md).

    python preprocessing/save_mouth_boxes.py --latents_dir ./data/vae_latents --out ./data/mouth_boxes

A frontal face detector runs on the frames the latents stage encoded (its recorded crop centre and size), a few
times a second; the mouth's part of the face boxes becomes the clip's box (``avatar_gen/latents/regions.py``).
A clip whose face is found in under half of the sampled frames gets a file without a box (its tokens weigh 1).
Clips that have a file already are kept (re-running resumes); ``--overwrite`` redoes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avatar_gen.latents.regions import write_face_track_mouth_boxes
from avatar_gen.utils.cli import add_common_arguments, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Find each encoded clip's mouth box with a face detector.")
    parser.add_argument("--latents_dir", type=Path, required=True, help="the VAE stage's output folder")
    parser.add_argument("--out", type=Path, required=True, help="where <clip_id>.json mouth boxes go")
    parser.add_argument("--sample_fps", type=float, default=5.0, help="frames per second the detector looks at")
    parser.add_argument("--overwrite", action="store_true", help="redo clips that have a box file already")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        counts = write_face_track_mouth_boxes(args.latents_dir, args.out, args.sample_fps, args.overwrite)
        return 1 if counts["failed"] else 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
