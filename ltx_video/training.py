"""Stage 4: train LoRA (or the whole transformer) + the audio projection on LTX-Video.

    cd ltx_video && python training.py --config ../configs/train-avatars.yaml
    deepspeed --num_gpus=4 training.py --config ../configs/train-avatars.yaml
    python ltx_video/training.py --config configs/train-tiny.yaml --override optimization.max_steps=10
"""

from __future__ import annotations

import argparse

from avatar_gen.utils.cli import add_common_arguments, run_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the avatar model (LoRA/full + audio projection) on LTX-Video.")
    parser.add_argument("--config", required=True,
                        help="training YAML (configs/train-avatars.yaml, configs/train-tiny.yaml)")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="change one config value (YAML syntax), e.g. optimization.max_steps=100; repeatable")
    parser.add_argument("--resume", metavar="latest|PATH", help="shorthand for --override checkpoints.resume=...")
    # The deepspeed launcher appends --local_rank=N; the rank is read from the environment instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_common_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from avatar_gen.training.config import load_train_config
        from avatar_gen.training.trainer import train

        overrides = list(args.override) + ([f"checkpoints.resume={args.resume}"] if args.resume else [])
        train(load_train_config(args.config, overrides))
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
