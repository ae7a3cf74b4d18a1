"""Rectified flow for LTX-Video: noising, timestep sampling, first-frame conditioning, the loss.

Conventions (as LTX-Video and its trainer): ``x_t = (1 - sigma) * x0 + sigma * noise`` with sigma in [0, 1]
(1 = pure noise), the transformer predicts the velocity ``noise - x0``, and its timestep input is
``sigma * 1000``.  Tensors here are *packed* latents [B, tokens, C] (tokens in frame, height, width order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

TIMESTEP_SCALE = 1000.0


def token_count_shift(num_tokens: int, base_seq_len: int = 1024, max_seq_len: int = 4096, base_shift: float = 0.95,
                      max_shift: float = 2.05) -> float:
    """Time shift for a sequence of ``num_tokens`` video tokens: ``exp(mu)`` with ``mu`` linear in the count.

    Longer videos (more tokens) keep more structure at a given sigma, so training spends more time at high noise.
    Defaults are LTX-Video's scheduler settings (``base_shift`` 0.95 at 1024 tokens, 2.05 at 4096).
    """
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    mu = base_shift + slope * (num_tokens - base_seq_len)
    return math.exp(mu)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """``shift * s / (1 + (shift - 1) * s)``: shift > 1 moves sigmas towards 1 (more noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_sigmas(batch_size: int, shift: float, mean: float = 0.0, std: float = 1.0,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B] sigmas from a shifted logit-normal: ``shift(sigmoid(mean + std * N(0, 1)))``."""
    normal = torch.randn(batch_size, generator=generator)
    sigmas = torch.sigmoid(mean + std * normal)
    return shift_sigmas(sigmas, shift).to(device)


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


def pipeline_sigmas(scheduler, num_steps: int, video_sequence_length: int) -> torch.Tensor:
    """[num_steps + 1] sigmas (1 ... 0) with which diffusers' ``LTXImageToVideoPipeline`` samples ``num_steps`` steps.

    The pipeline hands ``linspace(1, 1 / num_steps, num_steps)`` and ``mu`` (linear in ``video_sequence_length`` =
    latent frames x latent height x latent width, the VAE's grid before patching) to its
    ``FlowMatchEulerDiscreteScheduler``, which shifts them (and stretches them to ``shift_terminal`` when set) and
    appends 0.  ``scheduler``'s state is changed (give it one of its own).
    """
    import numpy as np

    config = scheduler.config
    mu = math.log(token_count_shift(video_sequence_length, config.get("base_image_seq_len", 256),
                                    config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                    config.get("max_shift", 1.15)))
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)
    return scheduler.sigmas.detach().float().cpu()


Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``velocity(current [B, N, C], timestep [B, N]) -> [B, N, C]``: the denoiser with its other inputs bound."""


def euler_sample(velocity: Velocity, clean: torch.Tensor, condition_mask: torch.Tensor, noise: torch.Tensor,
                 sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate the flow from ``noise`` [B, N, C] over decreasing ``sigmas`` (first 1, last 0) with Euler steps.

    Tokens with ``condition_mask`` [B, N] = 1 are held at ``clean`` with timestep 0 (image-to-video), exactly as
    :func:`make_flow_inputs` presents them in training.  ``sigmas`` is the schedule: :func:`pipeline_sigmas`
    (inference's), or any other.
    """
    keep = condition_mask[..., None]
    current = noise
    for sigma, next_sigma in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        current = keep * clean + (1 - keep) * current
        timestep = sigma * TIMESTEP_SCALE * (1 - condition_mask)
        current = current + (next_sigma - sigma) * velocity(current, timestep).float()
    return keep * clean + (1 - keep) * current


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
