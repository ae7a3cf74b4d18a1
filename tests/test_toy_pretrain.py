"""Toy pretraining pieces that decide what the latents hold (docs/toy.md): the per-frame VAE and the guard that keeps
latents of an older VAE from being reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_gen.errors import UserError
from avatar_gen.toy.config import ToyPretrainConfig, ToyVaeSection
from avatar_gen.toy.pretrain import pretrain
from avatar_gen.toy.vae import build_toy_vae, fold_temporal_kernels, reconstruct

REPO = Path(__file__).resolve().parent.parent


def _random_vae():
    torch.manual_seed(0)
    vae = build_toy_vae(ToyVaeSection(encoder_channels=8, decoder_channels=8, latent_channels=4, crop=16)).eval()
    with torch.no_grad():  # a trained VAE's time taps differ from each other; a fresh one's do too, at random
        for parameter in vae.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return vae


def _clip(frames: int = 6) -> np.ndarray:
    """uint8 [T, 16, 16, 3] whose frames differ a lot (a square moving across)."""
    clip = np.full((frames, 16, 16, 3), 40, dtype=np.uint8)
    for index in range(frames):
        clip[index, 4:10, 2 * index:2 * index + 5] = 230
    return clip


def test_folded_vae_codes_each_frame_as_it_codes_that_frame_alone():
    vae, clip = _random_vae(), _clip()
    alone = np.stack([reconstruct(vae, clip[index:index + 1])[0] for index in range(len(clip))])
    unfolded = reconstruct(vae, clip)
    assert np.abs(unfolded.astype(int) - alone).max() > 2  # unfolded, neighbouring frames leak into each other

    assert fold_temporal_kernels(vae) > 0
    folded_alone = np.stack([reconstruct(vae, clip[index:index + 1])[0] for index in range(len(clip))])
    assert np.abs(folded_alone.astype(int) - alone).max() <= 1  # what single-frame training taught is kept
    assert np.abs(reconstruct(vae, clip).astype(int) - alone).max() <= 1  # and a clip is coded frame by frame


def _config(tmp_path: Path) -> ToyPretrainConfig:
    return ToyPretrainConfig(work_dir=tmp_path / "work", output=tmp_path / "out",
                             transformer={"base_config": REPO / "configs" / "toy-base.yaml"})


@pytest.mark.parametrize("marker", [None, '{"vae_sha256": "another"}', "[1, 2]"])
def test_latents_of_another_vae_are_refused_not_reused(tmp_path, marker):
    work = tmp_path / "work"
    (work / "vae").mkdir(parents=True)
    (work / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"new weights")
    latents = work / "synthetic" / "train" / "vae_latents"
    latents.mkdir(parents=True)
    (latents / "clip_0.pt").write_bytes(b"old latents")
    if marker is not None:
        (latents.parent / "vae_latents.vae.json").write_text(marker)
    with pytest.raises(UserError, match="latents of another VAE"):
        pretrain(_config(tmp_path), stages=["latents"])
    assert (latents / "clip_0.pt").read_bytes() == b"old latents"
