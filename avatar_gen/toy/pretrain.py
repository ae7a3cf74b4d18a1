"""The toy pretraining stages, in order: ``data`` -> ``vae`` (see docs/toy.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from avatar_gen.config import dump_config
from avatar_gen.toy.config import ToyPretrainConfig
from avatar_gen.toy.data import HELD_OUT_FOLDER, TRAIN_FOLDER, load_clip_frames, write_toy_clips
from avatar_gen.toy.vae import measure_latent_statistics, train_toy_vae, vae_ceiling
from avatar_gen.utils.io import atomic_folder, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

STAGES = ("data", "vae")
VAE_FOLDER = "vae"
VAE_REPORT = "vae_ceiling.json"


def _paths(config: ToyPretrainConfig) -> dict[str, Path]:
    work = Path(config.work_dir)
    return {"synthetic": work / "synthetic", "vae_state": work / "vae_training", "vae": work / VAE_FOLDER}


def pretrain(config: ToyPretrainConfig, stages: list[str] | None = None) -> None:
    stages = list(stages or STAGES)
    paths = _paths(config)
    Path(config.work_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(config.work_dir) / "config.yaml", dump_config(config))
    torch.set_num_threads(config.vae.cpu_threads)
    if "data" in stages:
        write_toy_clips(config.data, config.seed, paths["synthetic"])
    if "vae" in stages:
        _vae_stage(config, paths)


def _vae_stage(config: ToyPretrainConfig, paths: dict[str, Path]) -> None:
    from avatar_gen.media import SAMPLE_RATE, extract_audio
    from avatar_gen.synthetic.dataset import CLIPS_DIR

    if (paths["vae"] / "config.json").is_file():
        log.info("toy VAE already trained: %s", paths["vae"])
        return
    train = load_clip_frames(paths["synthetic"] / TRAIN_FOLDER)
    held_out = load_clip_frames(paths["synthetic"] / HELD_OUT_FOLDER)
    vae = train_toy_vae(config.vae, train, paths["vae_state"], config.seed, held_out=held_out)
    measure_latent_statistics(vae, train)
    audio = {clip.clip_id: extract_audio(paths["synthetic"] / HELD_OUT_FOLDER / CLIPS_DIR / f"{clip.clip_id}.mp4",
                                         SAMPLE_RATE) for clip in held_out}
    report = vae_ceiling(vae, held_out, audio, config.data.fps)
    atomic_write_json(Path(config.work_dir) / VAE_REPORT, report)
    log.info("toy VAE on %d held-out clips: PSNR %s dB, offline sync of reconstructions %s (originals %s)",
             report["psnr"]["n"], _spread_text(report["psnr"]), _spread_text(report["sync_reconstruction"]),
             _spread_text(report["sync_original"]))
    with atomic_folder(paths["vae"]) as staging:
        vae.save_pretrained(staging)


def _spread_text(spread: dict) -> str:
    if spread["mean"] is None:
        return "n/a"
    return f"{spread['mean']:.3f} +- {spread['std']:.3f} (n={spread['n']})"
