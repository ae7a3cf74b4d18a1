"""The toy pretraining stages, in order (see docs/toy.md):

``data``      synthetic close-up clips, a training and a held-out set (:mod:`avatar_gen.toy.data`);
``vae``       the toy VAE, trained from scratch, its latent statistics and its held-out ceiling (:mod:`.vae`);
``latents``   the project's VAE-latents stage over the training clips with that VAE;
``base``      the transformer, pretrained from a fresh initialisation by the project's trainer as an image-to-video
              model with a fixed caption (``transformer.base_config``): it animates a still figure, knows no speech;
              then any ``transformer.continue_phases``, each a further run from the previous one's last weights;
``assemble``  VAE + trained transformer + LTX's scheduler as the ``output`` pipeline folder.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from avatar_gen.config import dump_config
from avatar_gen.errors import UserError
from avatar_gen.toy.config import ToyPretrainConfig
from avatar_gen.toy.data import HELD_OUT_FOLDER, TRAIN_FOLDER, load_clip_frames, write_toy_clips
from avatar_gen.toy.vae import measure_latent_statistics, train_toy_vae, vae_ceiling
from avatar_gen.utils.io import atomic_folder, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

STAGES = ("data", "vae", "latents", "base", "assemble")
VAE_FOLDER = "vae"
VAE_REPORT = "vae_ceiling.json"
LATENTS_VAE_SUFFIX = ".vae.json"  # beside the latents folder: which VAE's weights encoded them


def _paths(config: ToyPretrainConfig) -> dict[str, Path]:
    work = Path(config.work_dir)
    return {"synthetic": work / "synthetic", "vae_state": work / "vae_training", "vae": work / VAE_FOLDER,
            "latents": work / "synthetic" / TRAIN_FOLDER / "vae_latents", "init": work / "init-pipeline",
            "base_run": work / "base-run"}


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
    if "latents" in stages:
        _latents_stage(config, paths)
    if "base" in stages:
        _base_stage(config, paths)
    if "assemble" in stages:
        _assemble_stage(config, paths)


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


def _vae_fingerprint(vae_folder: Path) -> str:
    """SHA-256 of the VAE's weights (the latents depend on nothing else of it)."""
    digest = hashlib.sha256()
    for weights in sorted(vae_folder.glob("*.safetensors")):
        with weights.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _latents_stage(config: ToyPretrainConfig, paths: dict[str, Path]) -> None:
    from avatar_gen.latents.encode import LatentsConfig, encode_dataset

    # The latents stage resumes by skipping chunks already written; latents of another VAE would be kept silently.
    marker = paths["latents"].with_name(paths["latents"].name + LATENTS_VAE_SUFFIX)
    fingerprint = _vae_fingerprint(paths["vae"])
    if paths["latents"].is_dir() and any(paths["latents"].glob("*.pt")):
        recorded = read_json(marker, {})
        recorded = recorded.get("vae_sha256") if isinstance(recorded, dict) else None
        if recorded != fingerprint:
            raise UserError(f"{paths['latents']} holds latents of another VAE than {paths['vae']}; delete it (and "
                            f"the base runs {paths['base_run']}*, trained on them) to encode again")
    atomic_write_json(marker, {"vae": str(paths["vae"]), "vae_sha256": fingerprint})
    encode_dataset(LatentsConfig(
        inputs=paths["synthetic"] / TRAIN_FOLDER / "clips", output_dir=paths["latents"], pretrained=str(paths["vae"]),
        height=config.data.size, width=config.data.size, num_frames=config.transformer.num_frames,
        fps=config.data.fps, dtype="fp32", device="cpu", batch_size=4))


def _base_runs(config: ToyPretrainConfig, paths: dict[str, Path]) -> list[tuple[Path, Path, list[str]]]:
    """(initial pipeline, run folder, overrides) of each base phase: the first trains a fresh transformer, each of
    ``transformer.continue_phases`` the previous phase's last weights under a new learning-rate schedule."""
    common = [f"data.vae_latents={paths['latents']}", "checkpoints.resume=latest", *config.transformer.base_overrides]
    runs = [(paths["init"], paths["base_run"], common)]
    for number, overrides in enumerate(config.transformer.continue_phases, start=2):
        runs.append((paths["init"].with_name(f"{paths['init'].name}-{number}"),
                     paths["base_run"].with_name(f"{paths['base_run'].name}-{number}"), [*common, *overrides]))
    return runs


def _base_stage(config: ToyPretrainConfig, paths: dict[str, Path]) -> None:
    from diffusers import AutoencoderKLLTXVideo

    from avatar_gen.config import load_config
    from avatar_gen.model.checkpoint import load_base_transformer, resolve_checkpoint
    from avatar_gen.toy.transformer import build_toy_transformer, write_pipeline_folder
    from avatar_gen.training.config import TrainConfig
    from avatar_gen.training.trainer import Trainer

    runs = _base_runs(config, paths)
    # Every phase's config is checked before the first trains: a mistyped override of phase 2 must not wait 40 min.
    train_configs = [load_config(TrainConfig, config.transformer.base_config,
                                 [f"output_dir={run}", f"model.pretrained={init}", *overrides])
                     for init, run, overrides in runs]
    for index, (init, _, _) in enumerate(runs):
        later_init = runs[index + 1][0] if index + 1 < len(runs) else None
        if later_init is not None and (later_init / "model_index.json").is_file():
            log.info("base phase %d already done: %s starts from it", index + 1, later_init)
            continue
        if not (init / "model_index.json").is_file():
            vae = AutoencoderKLLTXVideo.from_pretrained(paths["vae"])
            if index == 0:
                transformer = build_toy_transformer(config.transformer, vae.config.latent_channels, config.seed)
            else:
                previous = resolve_checkpoint(runs[index - 1][1] / "checkpoints")
                transformer = load_base_transformer(previous / "transformer", None, torch.float32)
                log.info("base phase %d starts from %s", index + 1, previous)
            write_pipeline_folder(init, vae, transformer)
        Trainer(train_configs[index]).train()


def _assemble_stage(config: ToyPretrainConfig, paths: dict[str, Path]) -> None:
    from diffusers import AutoencoderKLLTXVideo

    from avatar_gen.model.checkpoint import load_base_transformer, resolve_checkpoint
    from avatar_gen.toy.transformer import write_pipeline_folder

    checkpoint = resolve_checkpoint(_base_runs(config, paths)[-1][1] / "checkpoints")
    transformer = load_base_transformer(checkpoint / "transformer", None, torch.float32)
    vae = AutoencoderKLLTXVideo.from_pretrained(paths["vae"])
    write_pipeline_folder(Path(config.output), vae, transformer)
    log.info("toy LTX-Video pipeline (base from %s) written to %s", checkpoint, config.output)
