"""Generate synthetic talking-face clips: ``python -m avatar_gen.synthetic --out data/synthetic --num_clips 8``."""

from __future__ import annotations

import argparse
import logging

from avatar_gen.utils.cli import add_common_arguments, run_main

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m avatar_gen.synthetic",
        description="Write synthetic talking-face clips (MP4 + AAC speech), their ground truth and an "
                    "AVSpeech-format CSV. See docs/synthetic.md.")
    parser.add_argument("--out", required=True, help="output folder (clips/, ground_truth/, avspeech.csv)")
    parser.add_argument("--num_clips", type=int, default=8, help="talking clips (default 8)")
    parser.add_argument("--two_face_clips", type=int, default=0, help="extra clips with two faces (default 0)")
    parser.add_argument("--silent_clips", type=int, default=0, help="extra clips without speech (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="everything follows from it (default 0)")
    parser.add_argument("--size", type=int, default=256, help="frame width = height in pixels (default 256)")
    parser.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    parser.add_argument("--min_seconds", type=float, default=3.0, help="shortest clip (default 3)")
    parser.add_argument("--max_seconds", type=float, default=8.0, help="longest clip (default 8)")
    parser.add_argument("--framing", default="half_body", choices=("half_body", "close_up"),
                        help="half_body (AVSpeech-like, default) or close_up (the face fills the frame: the toy world)")
    parser.add_argument("--voices", default=None,
                        help="comma-separated espeak voices to draw from (default: all six built-in English voices)")
    parser.add_argument("--portrait", default=None,
                        help="also write one unseen face as a PNG at this path (an inference input)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate clips that already exist")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from avatar_gen.synthetic import generate_dataset, make_portrait

        clips = generate_dataset(args.out, num_clips=args.num_clips, seed=args.seed, size=args.size, fps=args.fps,
                                 min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                                 two_face_clips=args.two_face_clips, silent_clips=args.silent_clips,
                                 overwrite=args.overwrite, framing=args.framing,
                                 voices=None if args.voices is None else [v.strip() for v in args.voices.split(",")])
        log.info("%d clips, %.1f s of video in %s", len(clips), sum(c.duration for c in clips), args.out)
        if args.portrait:
            log.info("portrait written to %s", make_portrait(args.portrait, seed=args.seed, size=args.size,
                                                                      framing=args.framing))
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
