"""``python -m avatar_gen.toy pretrain --config configs/toy-pretrain.yaml``: pretrain the toy LTX-Video (docs/toy.md).

Every stage is resumable: run the same command again after an interruption and it continues where it stopped
(finished stages are skipped; the VAE and the transformer resume from their last checkpoint).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from avatar_gen.utils.cli import add_common_arguments, run_main

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "toy-pretrain.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m avatar_gen.toy",
                                     description="The toy world: a small LTX-Video pretrained here (docs/toy.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    pretrain = commands.add_parser("pretrain", help="pretrain the toy VAE and image-to-video transformer")
    pretrain.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                          help=f"toy pretraining YAML (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    pretrain.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                          help="change one config value (repeatable)")
    pretrain.add_argument("--stages", nargs="+", choices=("data", "vae", "latents", "base", "assemble"), default=None,
                          help="run only these stages (default: all, in order)")
    add_common_arguments(pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from avatar_gen.config import load_config
        from avatar_gen.toy.config import ToyPretrainConfig
        from avatar_gen.toy.pretrain import pretrain

        config = load_config(ToyPretrainConfig, args.config, args.override)
        pretrain(config, stages=args.stages)
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
