"""The LTX-Video VAE: loading, encoding frames to latents, decoding latents to frames, normalisation.

Pixels go in and out of the VAE as float tensors [B, 3, F, H, W] in [-1, 1]; frames on disk and in the
media layer are uint8 RGB [F, H, W, 3].  A VAE compresses ``s`` x in space and ``t`` x in time (plus the first
frame): F = t k + 1 frames of H x W give latents [B, C, k + 1, H / s, W / s]; LTX's factors are below, code with a
loaded VAE reads its own (:func:`vae_compression`); LTX's are in :mod:`avatar_gen.ltx`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_gen.errors import UserError
from avatar_gen.ltx import LTX_SPATIAL_COMPRESSION, LTX_TEMPORAL_COMPRESSION
from avatar_gen.utils.vae_space import (denormalize_latents, frames_to_pixels,  # noqa: F401 - this module's API
                                        normalize_latents, pixels_to_frames)
from avatar_gen.utils.pretrained import loading_error, resolve_pretrained
from avatar_gen.media.frames import resize_frames

log = logging.getLogger(__name__)

DEFAULT_PRETRAINED = "Lightricks/LTX-Video"
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32}


def vae_compression(vae: Any) -> tuple[int, int]:
    """(temporal, spatial) compression factors of a loaded ``AutoencoderKLLTXVideo``."""
    return int(vae.temporal_compression_ratio), int(vae.spatial_compression_ratio)


@dataclass
class LoadedVae:
    """A VAE ready to encode, with what is needed to describe it in every chunk's metadata."""

    vae: Any  # diffusers.AutoencoderKLLTXVideo, in eval mode on ``device``
    name_or_path: str
    revision: str | None
    dtype_name: str  # "bf16" | "fp32"
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    def metadata(self) -> dict:
        """The ``vae`` block of a chunk's JSON (DESIGN.md): identity, dtype and normalisation statistics."""
        return vae_metadata(self.vae, self.name_or_path, self.revision, self.dtype_name)


def vae_metadata(vae: Any, name_or_path: str, revision: str | None, dtype_name: str) -> dict:
    """``{name_or_path, revision, dtype, latents_mean, latents_std, scaling_factor, temporal_compression,
    spatial_compression}`` of a loaded VAE.

    ``latents_mean``/``latents_std`` are per-channel lists (length C); training normalises stored raw
    latents as ``(z - mean) * scaling_factor / std``.  The compression factors are the VAE's own
    (:func:`vae_compression`): training and the checkpoint take them from here.
    """
    temporal, spatial = vae_compression(vae)
    return {
        "name_or_path": name_or_path,
        "revision": revision,
        "dtype": dtype_name,
        "latents_mean": [float(v) for v in vae.latents_mean.detach().float().cpu()],
        "latents_std": [float(v) for v in vae.latents_std.detach().float().cpu()],
        "scaling_factor": float(vae.config.scaling_factor),
        "temporal_compression": temporal,
        "spatial_compression": spatial,
    }


def _vae_subfolder(folder: Path) -> str | None:
    """``"vae"`` for a pipeline folder, ``None`` for a bare VAE folder; UserError when neither."""
    if (folder / "vae" / "config.json").is_file():
        return "vae"
    if (folder / "config.json").is_file():
        return None
    raise UserError(f"no LTX-Video VAE in {folder}: expected a diffusers pipeline folder with vae/config.json "
                    "or a VAE folder with config.json")


def load_vae(name_or_path: str = DEFAULT_PRETRAINED, revision: str | None = None, dtype: str = "bf16",
             device: str | torch.device | None = None, tiling: bool = False) -> LoadedVae:
    """Load ``AutoencoderKLLTXVideo`` from a hub id or a local folder (pipeline folder or bare VAE folder).

    Never falls back to another model: a missing folder or an unreachable hub id raises a UserError
    naming what was wanted.  ``tiling`` turns on the VAE's spatial tiling (for sizes above 512 px on
    small GPUs; it changes the latents slightly at tile seams).
    """
    from diffusers import AutoencoderKLLTXVideo

    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UserError(f"unknown torch device {device!r} (e.g. cpu, cuda, cuda:1)") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but torch sees no CUDA GPU")
    source = resolve_pretrained(name_or_path, "LTX-Video VAE")
    subfolder = _vae_subfolder(Path(source.source)) if source.is_local else "vae"
    try:
        vae = AutoencoderKLLTXVideo.from_pretrained(source.source, subfolder=subfolder, revision=revision,
                                                    torch_dtype=DTYPES[dtype])
    except (OSError, ValueError) as exc:
        raise loading_error(exc, source, "LTX-Video VAE", revision) from None
    vae = vae.to(torch_device).eval().requires_grad_(False)
    if tiling:
        vae.enable_tiling()
    log.info("VAE %s%s loaded on %s in %s", name_or_path, f"@{revision}" if revision else "", torch_device, dtype)
    return LoadedVae(vae=vae, name_or_path=name_or_path, revision=revision, dtype_name=dtype, device=torch_device)


@torch.no_grad()
def encode_frames(vae: Any, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Encode video with the VAE; returns the posterior mean (= mode), raw (not normalised).

    ``frames``: uint8 numpy [F, H, W, 3] / [B, F, H, W, 3], or float pixels [B, 3, F, H, W] in [-1, 1].
    F must be t k + 1 and H, W multiples of s for the VAE's factors (LTX: t = 8, s = 32).  Returns latents
    [B, C, (F - 1) / t + 1, H / s, W / s]
    ([C, ...] for a single unbatched uint8 clip) in the VAE's dtype, on the VAE's device.
    We store the mean rather than a sample: latents are then reproducible (a re-run writes the same
    bytes), and training can still add noise if it wants to.
    """
    parameter = next(vae.parameters())
    single = isinstance(frames, np.ndarray) and frames.ndim == 4
    if isinstance(frames, np.ndarray):
        pixels = frames_to_pixels(frames, parameter.device, parameter.dtype)
    else:
        pixels = frames.to(device=parameter.device, dtype=parameter.dtype)
    if single:
        pixels = pixels.unsqueeze(0)
    if pixels.ndim != 5 or pixels.shape[1] != 3:
        raise ValueError(f"encode_frames wants pixels [B, 3, F, H, W], got {tuple(pixels.shape)}")
    _check_video_size(pixels.shape[2], pixels.shape[3], pixels.shape[4], *vae_compression(vae))
    latents = vae.encode(pixels).latent_dist.mode()
    return latents[0] if single else latents


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor, height: int | None = None, width: int | None = None,
                   decode_timestep: float = 0.0, decode_noise_scale: float = 0.0,
                   generator: torch.Generator | None = None) -> np.ndarray:
    """Decode raw (not normalised) latents back to uint8 frames.

    ``latents``: [C, F', h, w] or [B, C, F', h, w].  Returns frames [F, H, W, 3] (or [B, F, H, W, 3]) with
    F = t (F' - 1) + 1 for the VAE's temporal factor t; H x W is h*s x w*s for its spatial factor s unless
    ``height``/``width`` ask for another size (resized).  For VAEs with timestep conditioning (LTX-Video 0.9.1+),
    ``latents`` are mixed with ``decode_noise_scale`` of Gaussian noise from ``generator`` and decoded at
    ``decode_timestep``, as the pipeline does (inference: :data:`avatar_gen.ltx.LTX_DECODE_TIMESTEP`, ...).
    """
    single = latents.ndim == 4
    batch = latents.unsqueeze(0) if single else latents
    parameter = next(vae.parameters())
    batch = batch.to(device=parameter.device, dtype=parameter.dtype)
    timestep = None
    if getattr(vae.config, "timestep_conditioning", False):
        if decode_noise_scale:
            noise = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
            batch = (1 - decode_noise_scale) * batch + decode_noise_scale * noise
        timestep = torch.full((batch.shape[0],), float(decode_timestep), device=batch.device, dtype=batch.dtype)
    frames = pixels_to_frames(vae.decode(batch, timestep).sample)
    if height is not None or width is not None:
        target_h = height or frames.shape[-3]
        target_w = width or frames.shape[-2]
        frames = np.stack([resize_frames(clip, target_h, target_w) for clip in frames])
    return frames[0] if single else frames


def _check_video_size(num_frames: int, height: int, width: int, temporal: int, spatial: int) -> None:
    if (num_frames - 1) % temporal:
        raise ValueError(f"the VAE needs {temporal}k+1 frames, got {num_frames}")
    if height % spatial or width % spatial:
        raise ValueError(f"the VAE needs sides that are multiples of {spatial}, got {height}x{width}")


def latent_shape(latent_channels: int, num_frames: int, height: int, width: int,
                 temporal: int = LTX_TEMPORAL_COMPRESSION, spatial: int = LTX_SPATIAL_COMPRESSION) -> list[int]:
    """[C, F', h, w] of the latents of ``num_frames`` (``temporal`` k + 1) frames of ``height`` x ``width``."""
    return [latent_channels, (num_frames - 1) // temporal + 1, height // spatial, width // spatial]
