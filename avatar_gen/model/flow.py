"""Rectified flow for LTX-Video: noising, timestep sampling, first-frame conditioning, the loss.

Conventions (as LTX-Video and its trainer): ``x_t = (1 - sigma) * x0 + sigma * noise`` with sigma in [0, 1]
(1 = pure noise), the transformer predicts the velocity ``noise - x0``, and its timestep input is
``sigma * 1000``.  Tensors here are *packed* latents [B, tokens, C] (tokens in frame, height, width order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TIMESTEP_SCALE = 1000.0


def token_count_mu(num_tokens: int, base_seq_len: int = 1024, max_seq_len: int = 4096, base_shift: float = 0.95,
                   max_shift: float = 2.05) -> float:
    """``mu`` of the time shift for a sequence of ``num_tokens`` video tokens: linear in the count, ``base_shift`` at
    ``base_seq_len`` and ``max_shift`` at ``max_seq_len`` (LTX-Video's scheduler settings by default).

    Computed in the order diffusers' pipelines compute it (slope, intercept, then the line), so that the inference
    schedule (:func:`avatar_gen.model.sampling.sigma_schedule`) gives the scheduler's sigmas bit for bit.
    """
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    intercept = base_shift - slope * base_seq_len
    return num_tokens * slope + intercept


def token_count_shift(num_tokens: int, base_seq_len: int = 1024, max_seq_len: int = 4096, base_shift: float = 0.95,
                      max_shift: float = 2.05) -> float:
    """Time shift for a sequence of ``num_tokens`` video tokens: ``exp(mu)`` with ``mu`` of :func:`token_count_mu`.

    Longer videos (more tokens) keep more structure at a given sigma, so training spends more time at high noise.
    """
    return math.exp(token_count_mu(num_tokens, base_seq_len, max_seq_len, base_shift, max_shift))


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """``shift * s / (1 + (shift - 1) * s)``: shift > 1 moves sigmas towards 1 (more noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_sigmas(batch_size: int, shift: float, mean: float = 0.0, std: float = 1.0,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  uniform_fraction: float = 0.0) -> torch.Tensor:
    """[B] sigmas from a shifted logit-normal: ``shift(sigmoid(mean + std * N(0, 1)))``; with ``uniform_fraction``
    > 0 each sample instead draws, with that probability, a sigma uniform in (0, 1).

    Why the uniform share: a shifted logit-normal almost never draws the low noise levels the sampler's last steps
    run at (shift 3: one sample in 2 000 below 0.1), so a model trained on few samples never learns them: the toy
    base's last step added noise instead of removing it (docs/results.md, loss by noise level).
    """
    normal = torch.randn(batch_size, generator=generator)
    sigmas = shift_sigmas(torch.sigmoid(mean + std * normal), shift)
    if uniform_fraction > 0:  # (no draw otherwise: runs without a uniform share keep their random stream)
        uniform = torch.rand(batch_size, generator=generator)
        chosen = torch.rand(batch_size, generator=generator) < uniform_fraction
        sigmas = torch.where(chosen, uniform, sigmas)
    return sigmas.to(device)


def leading_frames_token_mask(num_latent_frames: int, tokens_per_latent_frame: int,
                              clean_frames: torch.Tensor) -> torch.Tensor:
    """[B, tokens] float: 1 for the tokens of the first ``clean_frames[b]`` latent frames of sample ``b`` (0: none).

    Image-to-video gives one clean frame (the portrait); continuing a previous chunk gives its last ``m`` frames.
    """
    frame_of_token = torch.arange(num_latent_frames * tokens_per_latent_frame,
                                  device=clean_frames.device) // tokens_per_latent_frame
    return (frame_of_token[None, :] < clean_frames.long()[:, None]).float()


def first_frame_token_mask(batch_size: int, num_latent_frames: int, tokens_per_latent_frame: int,
                           conditioned: torch.Tensor) -> torch.Tensor:
    """[B, tokens] float: 1 for the first latent frame's tokens of samples with ``conditioned[b]`` True."""
    return leading_frames_token_mask(num_latent_frames, tokens_per_latent_frame, conditioned.long()[:batch_size])


@dataclass
class FlowInputs:
    """One noised batch: what the transformer gets and what it should predict."""

    noisy: torch.Tensor  # [B, N, C] model input
    timestep: torch.Tensor  # [B, N] per-token timestep, 0 on clean conditioning tokens
    target: torch.Tensor  # [B, N, C] velocity noise - x0
    loss_weight: torch.Tensor  # [B, N] 0 on conditioning tokens, 1 elsewhere
    sigmas: torch.Tensor  # [B]


def make_flow_inputs(clean: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor,
                     condition_mask: torch.Tensor) -> FlowInputs:
    """Noise packed ``clean`` latents [B, N, C] at ``sigmas`` [B]; tokens with ``condition_mask`` [B, N] = 1 stay
    clean, get timestep 0 and no loss (image-to-video: the first frame is given)."""
    sigma = sigmas.to(clean.dtype)[:, None, None]
    noisy = (1 - sigma) * clean + sigma * noise
    keep = condition_mask.to(clean.dtype)[..., None]
    noisy = keep * clean + (1 - keep) * noisy
    timestep = sigmas.float()[:, None] * TIMESTEP_SCALE * (1 - condition_mask.float())
    return FlowInputs(noisy=noisy, timestep=timestep, target=noise - clean, loss_weight=1 - condition_mask.float(),
                      sigmas=sigmas)


def flow_loss(prediction: torch.Tensor, inputs: FlowInputs, per_sample: bool = False) -> torch.Tensor:
    """Mean squared velocity error over the tokens with loss weight (fp32).  ``per_sample`` gives [B]."""
    squared = (prediction.float() - inputs.target.float()).pow(2).mean(dim=-1)
    weight = inputs.loss_weight
    if per_sample:
        return (squared * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
    return (squared * weight).sum() / weight.sum().clamp_min(1.0)


def pack_latents(latents: torch.Tensor, patch_size: int = 1, patch_size_t: int = 1) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, (F/pt)(H/p)(W/p), C*pt*p*p] tokens in (frame, height, width) order, as LTX-Video packs."""
    batch, channels, frames, height, width = latents.shape
    latents = latents.reshape(batch, channels, frames // patch_size_t, patch_size_t, height // patch_size, patch_size,
                              width // patch_size, patch_size)
    return latents.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_latents(tokens: torch.Tensor, frames: int, height: int, width: int, patch_size: int = 1,
                   patch_size_t: int = 1) -> torch.Tensor:
    """Inverse of :func:`pack_latents`; ``frames``/``height``/``width`` are the post-patch token grid."""
    batch = tokens.shape[0]
    tokens = tokens.reshape(batch, frames, height, width, -1, patch_size_t, patch_size, patch_size)
    return tokens.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)
