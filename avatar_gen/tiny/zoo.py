"""The tiny model zoo: seeded, randomly initialised models written in the real on-disk formats.

Every stage script runs its real loading code on them (``from_pretrained`` on a diffusers folder, a
Whisper checkpoint file, ...), so tests and the demo exercise the same paths as real weights, on a
2-core CPU, offline.  They produce noise: they prove the pipeline, not the quality.

    python -m avatar_gen.tiny --out models/tiny

Writers register in :data:`TINY_MODEL_WRITERS`; each writes one sub-folder of the zoo.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from avatar_gen.errors import UserError
from avatar_gen.tiny.faceformer import TINY_FACEFORMER_FILE, write_tiny_faceformer
from avatar_gen.tiny.ltx import TINY_LTX_FOLDER, write_tiny_ltx
from avatar_gen.tiny.wav2vec2 import TINY_WAV2VEC2_FOLDER, write_tiny_wav2vec2
from avatar_gen.tiny.whisper import TINY_WHISPER_FILE, write_tiny_whisper
from avatar_gen.utils.cli import run_main

log = logging.getLogger(__name__)

TINY_MODEL_WRITERS: dict[str, Callable[[Path, int], Path]] = {
    TINY_LTX_FOLDER: write_tiny_ltx,
    TINY_WAV2VEC2_FOLDER: write_tiny_wav2vec2,
    TINY_FACEFORMER_FILE: write_tiny_faceformer,
    TINY_WHISPER_FILE: write_tiny_whisper,
}


def build_tiny_zoo(out_dir: str | Path, seed: int = 0, only: list[str] | None = None,
                   overwrite: bool = False) -> dict[str, Path]:
    """Write every registered tiny model under ``out_dir`` (skipping ones already there unless ``overwrite``)."""
    out_dir = Path(out_dir)
    written = {}
    for name, writer in TINY_MODEL_WRITERS.items():
        if only and name not in only:
            continue
        target = out_dir / name
        if target.exists() and not overwrite:
            log.info("tiny %s: already at %s", name, target)
            written[name] = target
            continue
        written[name] = writer(out_dir, seed)
        log.info("tiny %s: wrote %s", name, written[name])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avatar_gen.tiny",
        description="Write the tiny, seeded, random model zoo (real formats, for tests/demo).")
    parser.add_argument("--out", default="models/tiny", help="output folder (default: models/tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help=f"subset of: {', '.join(TINY_MODEL_WRITERS)}")
    parser.add_argument("--overwrite", action="store_true", help="rewrite models that already exist")
    args = parser.parse_args(argv)

    def body() -> int:
        unknown = set(args.only or []) - set(TINY_MODEL_WRITERS)
        if unknown:
            raise UserError(f"unknown tiny model(s): {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(TINY_MODEL_WRITERS)}")
        build_tiny_zoo(args.out, seed=args.seed, only=args.only, overwrite=args.overwrite)
        return 0

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
