"""The spaces around the VAE: uint8 frames <-> pixels in [-1, 1], raw latents <-> normalised latents.

Torch and numpy only, so that the torch-only sampler (:mod:`avatar_gen.inference.sampler`, which
``python -m bench.gpu`` runs on a machine without the media stack) and the latents stage
(:mod:`avatar_gen.latents.vae`, which re-exports these) share one formula for each.
"""

from __future__ import annotations

import numpy as np
import torch


def frames_to_pixels(frames: np.ndarray, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames [F, H, W, 3] (or a batch [B, F, H, W, 3]) -> pixels [(B,) 3, F, H, W] in [-1, 1].

    The uint8 frames travel to ``device`` first (4x fewer bytes than floats), then are scaled there (x / 127.5 - 1
    gives the same bits as diffusers' image processor's 2 (x / 255) - 1).
    """
    array = np.ascontiguousarray(frames)
    if not array.flags.writeable:  # e.g. an image decoded by PIL; torch refuses to share read-only memory quietly
        array = array.copy()
    tensor = torch.from_numpy(array).to(device)
    channels_first = tensor.movedim(-1, -4)  # [..., F, H, W, 3] -> [..., 3, F, H, W]
    # Scale in float32, then round once to ``dtype`` (bf16 arithmetic would round twice).
    return channels_first.float().div_(127.5).sub_(1.0).to(dtype)


def pixels_to_frames(pixels: torch.Tensor) -> np.ndarray:
    """float pixels [(B,) 3, F, H, W] in [-1, 1] -> uint8 frames [(B,) F, H, W, 3] (clipped, rounded).

    Converted on the pixels' device, so that a GPU hands a quarter of the bytes to the CPU."""
    scaled = pixels.detach().float().clamp(-1.0, 1.0).add_(1.0).mul_(127.5)
    return scaled.round_().to(torch.uint8).movedim(-4, -1).contiguous().cpu().numpy()


def _channel_view(stats: torch.Tensor | list[float], like: torch.Tensor) -> torch.Tensor:
    """Per-channel statistics shaped to broadcast over [C, F, h, w] or [B, C, F, h, w]."""
    values = torch.as_tensor(stats, dtype=torch.float32, device=like.device)
    return values.view(-1, 1, 1, 1)


def normalize_latents(latents: torch.Tensor, latents_mean: torch.Tensor | list[float],
                      latents_std: torch.Tensor | list[float], scaling_factor: float = 1.0) -> torch.Tensor:
    """Raw VAE latents -> the transformer's input space: ``(z - mean) * scaling_factor / std`` per channel."""
    mean = _channel_view(latents_mean, latents)
    std = _channel_view(latents_std, latents)
    return ((latents.float() - mean) * scaling_factor / std).to(latents.dtype)


def denormalize_latents(latents: torch.Tensor, latents_mean: torch.Tensor | list[float],
                        latents_std: torch.Tensor | list[float], scaling_factor: float = 1.0) -> torch.Tensor:
    """Inverse of :func:`normalize_latents`: ``z * std / scaling_factor + mean``."""
    mean = _channel_view(latents_mean, latents)
    std = _channel_view(latents_std, latents)
    return (latents.float() * std / scaling_factor + mean).to(latents.dtype)
