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
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from avatar_gen.audio.faceformer import TINY_FACEFORMER_FILE, write_tiny_faceformer
from avatar_gen.audio.features import TINY_WAV2VEC2_FOLDER, write_tiny_wav2vec2
from avatar_gen.scraper.tiny_whisper import TINY_WHISPER_FILE, write_tiny_whisper

log = logging.getLogger(__name__)

TINY_LTX_FOLDER = "ltx-video"
# The tiny transformer's caption width: what the audio projection must output for it.
TINY_CAPTION_CHANNELS = 32


def tiny_ltx_components(seed: int = 0) -> dict:
    """A tiny LTX-Video: VAE with the real 32x spatial / 8x temporal compression (patch 4, three
    2x2x2 down-samplings), 8 latent channels, and a 2-layer transformer with head dim 16."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8,
        block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False, patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    # Real VAEs ship per-channel statistics so that normalised latents have unit scale; give the tiny
    # one statistics measured on smooth random video, so the same normalisation code is exercised.
    with torch.no_grad():
        smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 9, 8, 8) * 2 - 1, size=(9, 64, 64), mode="trilinear")
        latents = vae.encode(smooth).latent_dist.mean
        vae.latents_mean.copy_(latents.mean(dim=(0, 2, 3, 4)))
        vae.latents_std.copy_(latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-3))
    torch.manual_seed(seed + 1)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
        num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32, num_layers=2,
        caption_channels=TINY_CAPTION_CHANNELS,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )
    return {"vae": vae, "transformer": transformer, "scheduler": scheduler}


def write_tiny_ltx(out_dir: Path, seed: int = 0) -> Path:
    """Write a diffusers ``LTXImageToVideoPipeline`` folder without text encoder/tokenizer."""
    from diffusers import LTXImageToVideoPipeline

    components = tiny_ltx_components(seed)
    pipeline = LTXImageToVideoPipeline(text_encoder=None, tokenizer=None, **components)
    target = out_dir / TINY_LTX_FOLDER
    _save_atomically(target, pipeline.save_pretrained)
    return target


def _save_atomically(target: Path, save: Callable[[str], None]) -> None:
    """Save into a temporary sibling folder, then swap it in, so a killed run leaves no half model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        save(str(staging))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


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
    from avatar_gen.errors import UserError
    from avatar_gen.utils.cli import run_main

    parser = argparse.ArgumentParser(description="Write the tiny, seeded, random model zoo (real formats, for tests/demo).")
    parser.add_argument("--out", default="models/tiny", help="output folder (default: models/tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help=f"subset of: {', '.join(TINY_MODEL_WRITERS)}")
    parser.add_argument("--overwrite", action="store_true", help="rewrite models that already exist")
    args = parser.parse_args(argv)

    def body() -> int:
        unknown = set(args.only or []) - set(TINY_MODEL_WRITERS)
        if unknown:
            raise UserError(f"unknown tiny model(s): {', '.join(sorted(unknown))}; known: {', '.join(TINY_MODEL_WRITERS)}")
        build_tiny_zoo(args.out, seed=args.seed, only=args.only, overwrite=args.overwrite)
        return 0

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
