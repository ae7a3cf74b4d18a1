"""``python -m avatar_gen.toy pretrain --config configs/toy-pretrain.yaml``: pretrain the toy LTX-Video (docs/toy.md).

Every stage is resumable: run the same command again after an interruption and it continues where it stopped
(finished stages are skipped; the VAE and the transformer resume from their last checkpoint).

``python -m avatar_gen.toy measure --checkpoint NAME=PATH ... --held_out DIR --out DIR``: the held-out report of
trained checkpoints; ``measure-long``: the long-video (drift) report.  Both are cached and resumable.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from avatar_gen.config import add_field_flag, config_from_flags
from avatar_gen.errors import UserError
from avatar_gen.inference.guidance import GUIDANCE_REGIONS, START_REGIONS
from avatar_gen.inference.handoff import ANCHORS, HANDOFFS
from avatar_gen.toy.ceiling import RIDGE
from avatar_gen.toy.measure import (
    LOCK_FILE, SECTIONS, MeasureConfig, MeasureSettings, measure, parse_checkpoint_flags)
from avatar_gen.toy.measure_long import LongMeasureConfig, measure_long
from avatar_gen.utils.cli import add_common_arguments, interrupt_on_sigterm, run_main
from avatar_gen.utils.io import exclusive_lock

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
    measure = commands.add_parser(
        "measure", help="held-out report of trained checkpoints (VAE ceiling, audio gain, videos, guidance sweep, "
        "loss by noise level)",
        description="Measure what checkpoints learned, on held-out clips: the base VAE's ceiling, the audio-"
        "conditioning gain, generated videos (face found, offline sync@0, the control with another clip's speech, "
        "identity SSIM, flicker), a guidance sweep and the loss by noise level.  Writes <out>/measure.json and "
        "<out>/measure.md; videos and figures are cached per clip in <out>/cache, so a re-run continues where it "
        "stopped.",
        epilog=MEASURE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _settings_flags(measure, MeasureConfig)

    def flag(name: str, help: str, **kwargs) -> None:
        add_field_flag(measure, MeasureConfig, name, help, **kwargs)

    flag("sections", "what to measure", nargs="+", choices=SECTIONS)
    flag("vae_clips", "held-out clips reconstructed for the VAE ceiling", type=int)
    flag("gain_chunks", "held-out chunks of the audio gain", type=int)
    flag("num_draws", "noise/sigma draws of the audio gain", type=int)
    flag("cases", "held-out cases generated", type=int)
    flag("sweep_guidance", "guidance scales of the sweep", nargs="+", type=float)
    flag("sweep_cases", "cases generated at each sweep guidance", type=int)
    flag("noise_levels", "noise levels (sigma in (0, 1]) of the loss by noise level", nargs="+", type=float)
    flag("noise_chunks", "held-out chunks of the loss by noise level", type=int)
    add_common_arguments(measure)
    long = commands.add_parser(
        "measure-long", help="long-video report: drift over a minute of held-out speech per portrait",
        description="Generate one long video per held-out portrait and measure its drift: flicker at chunk "
        "boundaries vs inside chunks, identity SSIM and offline sync at the end vs the start, colour shift, seconds "
        "and peak memory per chunk.  Writes <out>/measure-long.json and .md (cached per case like measure).",
        epilog=LONG_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _settings_flags(long, LongMeasureConfig)

    def long_flag(name: str, help: str, **kwargs) -> None:
        add_field_flag(long, LongMeasureConfig, name, help, **kwargs)

    long_flag("portraits", "held-out portraits, one long video each", type=int)
    long_flag("seconds", "seconds of speech per video", type=float)
    long_flag("identity_window", "seconds at each end for identity SSIM", type=float)
    long_flag("colour_window", "seconds at each end for the colour shift", type=float)
    long_flag("sync_window", "seconds at each end for the offline sync", type=float)
    long_flag("timing_chunks", "chunks (from 0) whose seconds and peak memory are reported", nargs="+", type=int)
    long_flag("handoff", "how a chunk continues the previous one (docs/inference.md, Long speech)",
              choices=HANDOFFS)
    long_flag("handoff_frames", "latent frames handed over with --handoff latent (default: the checkpoint's)",
              type=int)
    long_flag("anchor", "identity anchor of the latent hand-off", choices=ANCHORS)
    add_common_arguments(long)
    ceiling = commands.add_parser(
        "speech-ceiling", help="how much of the latents' motion the speech could explain (a linear probe)",
        description="Regress each latent frame minus its chunk's first on the speech features around it and on "
        "the ground truth's mouth opening (ridge, fit on some clips, scored on the others) and write the variance "
        "each explains, overall and in the mouth box (avatar_gen.toy.ceiling).",
        epilog=CEILING_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ceiling.add_argument("--data", type=Path, required=True,
                         help="a toy split folder with vae_latents/, audio_latents/ and ground_truth/")
    ceiling.add_argument("--feature_dim", type=int, default=40, help="width of the speech features (default 40)")
    ceiling.add_argument("--held_out_fraction", type=float, default=0.2,
                         help="share of the clips scored, not fit (default 0.2)")
    ceiling.add_argument("--ridge", type=float, default=RIDGE,
                         help=f"ridge penalty on the standardised inputs (default {RIDGE:g})")
    ceiling.add_argument("--out", type=Path, required=True, help="the JSON report to write")
    add_common_arguments(ceiling)
    return parser


MEASURE_EXAMPLE = """example (global vs local alignment, each a LoRA run of configs/train-toy.yaml; docs/toy.md):
  python -m avatar_gen.toy measure \\
      --checkpoint global=outputs/toy-global/checkpoints/latest \\
      --checkpoint local=outputs/toy-local/checkpoints/latest \\
      --held_out outputs/toy-pretrain/synthetic/held_out --out outputs/toy-measure

a quick look (fewer cases, chunks and steps):
  python -m avatar_gen.toy measure --checkpoint outputs/toy-local/checkpoints/latest \\
      --held_out outputs/toy-pretrain/synthetic/held_out --out outputs/toy-measure-quick \\
      --cases 4 --sweep_cases 2 --sweep_guidance 1 3 --gain_chunks 16 --steps 10
"""

CEILING_EXAMPLE = """example (the training clips of the toy pretraining):
  python -m avatar_gen.toy speech-ceiling --data outputs/toy-pretrain/synthetic/train \\
      --out outputs/toy-measure/speech-ceiling.json
"""

LONG_EXAMPLE = """example (8 held-out portraits, a minute of speech each):
  python -m avatar_gen.toy measure-long --checkpoint local=outputs/toy-local/checkpoints/latest \\
      --held_out outputs/toy-pretrain/synthetic/held_out --out outputs/toy-measure
"""


def _settings_flags(parser: argparse.ArgumentParser, model: type[MeasureSettings]) -> None:
    """The flags both measurements share."""
    parser.add_argument("--checkpoint", action="append", default=[], required=True, metavar="NAME=PATH",
                        help="a checkpoint to measure (step folder, latest link or run folder) with its label in the "
                             "report; repeat to compare several (a bare PATH is labelled by its run folder)")
    add_field_flag(parser, model, "held_out", "held-out synthetic clips (<work_dir>/synthetic/held_out of the toy "
                   "pretraining): clips/ and ground_truth/", type=Path, required=True)
    add_field_flag(parser, model, "out", "report folder (the JSON, the Markdown and cache/)", type=Path,
                   required=True)
    add_field_flag(parser, model, "steps", "denoising steps per chunk", type=int)
    add_field_flag(parser, model, "guidance", "audio guidance scale (default: the generator's)", type=float)
    add_field_flag(parser, model, "guidance_region", "tokens the guidance applies to (default: the generator's)",
                   choices=GUIDANCE_REGIONS)
    add_field_flag(parser, model, "guidance_interval", "noise levels LOW HIGH (0 <= LOW < HIGH <= 1) at which the "
                   "guidance applies (default: the generator's)", type=float, nargs=2, metavar=("LOW", "HIGH"))
    add_field_flag(parser, model, "start_sigma", "noise level (0, 1] denoising starts at, from the portrait's still "
                   "video (default: the generator's; 1 = pure noise)", type=float, metavar="SIGMA")
    add_field_flag(parser, model, "start_region", "below 1, the tokens that start from the portrait: outside_mouth "
                   "(the mouth's from pure noise) or frame (default: the generator's)", choices=START_REGIONS)
    add_field_flag(parser, model, "seed", "seed of every generation and of the gain's draws", type=int)
    add_field_flag(parser, model, "device", "torch device")
    add_field_flag(parser, model, "cpu_threads", "torch threads on CPU", type=int)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    command = shlex.join(["python", "-m", "avatar_gen.toy", *(argv if argv is not None else sys.argv[1:])])

    def body() -> int:
        if args.command == "speech-ceiling":
            from avatar_gen.toy.ceiling import speech_ceiling
            from avatar_gen.utils.io import atomic_write_json

            if not 0 < args.held_out_fraction < 1 or args.ridge < 0:
                raise UserError(f"--held_out_fraction must be between 0 and 1 and --ridge >= 0, got "
                                f"{args.held_out_fraction} and {args.ridge}")
            atomic_write_json(args.out, {"command": command, **speech_ceiling(
                args.data, args.feature_dim, args.held_out_fraction, ridge=args.ridge)})
            log.info("report written to %s", args.out)
            return 0
        if args.command in ("measure", "measure-long"):
            model, run = (MeasureConfig, measure) if args.command == "measure" else (LongMeasureConfig, measure_long)
            config = config_from_flags(model, args, checkpoints=parse_checkpoint_flags(args.checkpoint))
            busy = f"another measurement is writing into {config.out}: wait for it to end or give another --out"
            # a terminated run stops ffmpeg and leaves no partial video in the cache; the lock keeps a second run of
            # the same --out from writing the same cached videos at the same time
            with interrupt_on_sigterm(), exclusive_lock(Path(config.out) / LOCK_FILE, busy):
                run(config, command=command)
            return 0
        from avatar_gen.config import load_config
        from avatar_gen.toy.config import ToyPretrainConfig
        from avatar_gen.toy.pretrain import pretrain

        config = load_config(ToyPretrainConfig, args.config, args.override)
        pretrain(config, stages=args.stages)
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
