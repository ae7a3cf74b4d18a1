"""Evaluate generated talking-head videos: lip sync, quality against references, temporal stability.

    python ltx_video/evaluate.py --generated outputs/samples --out outputs/eval
    python ltx_video/evaluate.py --generated outputs/samples --reference data/raw_videos --out outputs/eval \
        --syncnet models/syncnet_v2_state.pt --i3d models/i3d_torchscript.pt --heldout outputs/my_run

Writes <out>/metrics.json, <out>/report.md and PNG plots (see docs/evaluation.md).  The library call behind it,
``avatar_gen.evaluation.evaluate_directory``, is what the demo uses.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from avatar_gen.evaluation import evaluate_directory
from avatar_gen.evaluation.lipsync import DEFAULT_MAX_LAG
from avatar_gen.evaluation.pipeline import DEFAULT_DETECT_EVERY
from avatar_gen.utils.cli import add_common_arguments, run_main

__all__ = ["build_parser", "evaluate_directory", "main"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Lip-sync, quality and stability metrics for generated videos.")
    parser.add_argument("--generated", type=Path, required=True, help="folder of generated videos (.mp4, ...)")
    parser.add_argument("--reference", type=Path,
                        help="folder of reference videos named like the generated ones (PSNR, SSIM, FVD)")
    parser.add_argument("--out", type=Path, required=True, help="where metrics.json, report.md and plots go")
    parser.add_argument("--syncnet", type=Path,
                        help="SyncNet weights as a state dict (e.g. syncnet_v2.model): adds LSE-D / LSE-C")
    parser.add_argument("--i3d", type=Path,
                        help="FVD feature extractor: an I3D state dict (e.g. rgb_imagenet.pt) or a TorchScript "
                             "model (e.g. i3d_torchscript.pt); adds FVD, needs --reference")
    parser.add_argument("--heldout", type=Path,
                        help="evaluate only held-out clips: a training run folder (its data_split.json), that "
                             "file, or a list of clip ids (text, one per line, or JSON)")
    parser.add_argument("--input_images", type=Path,
                        help="folder of input portraits <clip id>.png|jpg: identity drift is measured against "
                             "them (default: against each video's first frame)")
    parser.add_argument("--max_lag", type=int, default=DEFAULT_MAX_LAG,
                        help=f"lip-sync offset search, frames each way (default {DEFAULT_MAX_LAG})")
    parser.add_argument("--detect_every", type=int, default=DEFAULT_DETECT_EVERY,
                        help=f"run the face detector on every N-th frame, interpolate between "
                             f"(default {DEFAULT_DETECT_EVERY})")
    parser.add_argument("--device", default="cpu", help="torch device for SyncNet and the FVD extractor")
    parser.add_argument("--overwrite", action="store_true", help="re-evaluate clips whose results are cached")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        metrics = evaluate_directory(
            args.generated, args.out, reference_dir=args.reference, syncnet_path=args.syncnet, i3d_path=args.i3d,
            heldout=args.heldout, input_images_dir=args.input_images, max_lag=args.max_lag,
            detect_every=args.detect_every, overwrite=args.overwrite, device=args.device,
        )
        summary = metrics["aggregates"]
        log.info(
            "evaluated %d clips (%d ok, %d partial, %d unreadable): %s", summary["num_clips"], summary["num_ok"],
            summary["num_partial"], summary["num_error"], args.out / "report.md")
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
