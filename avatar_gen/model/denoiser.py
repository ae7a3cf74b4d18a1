"""The denoiser trained and sampled: LTX-Video transformer + audio projection in the caption slot."""

from __future__ import annotations

import torch
from torch import nn

from avatar_gen.ltx import LTX_SPATIAL_COMPRESSION, LTX_TEMPORAL_COMPRESSION
from avatar_gen.model.alignment import Alignment, encoder_attention_mask
from avatar_gen.model.audio_projection import AudioProjection
from avatar_gen.model.caption import FixedCaption
from avatar_gen.model.flow import pack_latents, unpack_latents


class AvatarDenoiser(nn.Module):
    """Velocity prediction for packed video latents given per-frame audio features.

    One module (so DeepSpeed wraps both trainable parts), called as
    ``denoiser(noisy [B, N, C], audio_features [B, F, D], timestep [B, N] or [B], latent_frames, latent_height,
    latent_width, frame_rate)`` -> velocity [B, N, C]; N = latent_frames * latent_height * latent_width;
    ``frame_rate`` a number or one per item [B] (a batch may mix frame rates).  With a ``fixed_caption`` instead of
    an audio projection (pretraining an audio-free base) ``audio_features`` only give the batch (e.g. [B, F, 0]).
    """

    def __init__(self, transformer: nn.Module, audio_projection: AudioProjection | None,
                 alignment: Alignment = "global", local_margin_frames: int = 0,
                 temporal_compression: int = LTX_TEMPORAL_COMPRESSION,
                 spatial_compression: int = LTX_SPATIAL_COMPRESSION, fixed_caption: FixedCaption | None = None):
        super().__init__()
        if (audio_projection is None) == (fixed_caption is None):
            raise ValueError("the caption slot needs an audio projection or a fixed caption (one of them)")
        self.transformer = transformer
        self.audio_projection = audio_projection
        self.fixed_caption = fixed_caption
        self.alignment = alignment
        self.local_margin_frames = local_margin_frames
        self.temporal_compression = temporal_compression
        self.spatial_compression = spatial_compression

    @property
    def caption(self) -> AudioProjection | FixedCaption:
        """What fills the caption slot: the audio projection, or an audio-free base's fixed caption."""
        return self.fixed_caption if self.fixed_caption is not None else self.audio_projection

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        """(latent_frames, latent_height, latent_width) of the token grid of latents [B, C, F', h, w]."""
        config = self.transformer.config
        _, _, frames, height, width = latents.shape
        return frames // config["patch_size_t"], height // config["patch_size"], width // config["patch_size"]

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, F', h, w] -> the transformer's tokens [B, N, C']."""
        return pack_latents(latents, self.transformer.config["patch_size"], self.transformer.config["patch_size_t"])

    def unpack(self, tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`pack` for the token grid ``frames`` x ``height`` x ``width``."""
        config = self.transformer.config
        return unpack_latents(tokens, frames, height, width, config["patch_size"], config["patch_size_t"])

    def audio_tokens(self, audio_features: torch.Tensor) -> torch.Tensor:
        return self.audio_projection(audio_features)

    def attention_mask(self, batch_size: int, num_frames: int, latent_frames: int, latent_height: int,
                       latent_width: int, device: torch.device) -> torch.Tensor:
        token_frames = self.audio_projection.token_frame_index(num_frames, device=device)
        return encoder_attention_mask(self.alignment, batch_size, latent_frames, latent_height * latent_width,
                                      token_frames, self.local_margin_frames, self.temporal_compression)

    def rope_time_scale(self, frame_rate: float | torch.Tensor, device: torch.device) -> float | torch.Tensor:
        """RoPE's time scale (seconds per latent frame): a number, or [B, 1, 1, 1, 1] for per-item ``frame_rate`` [B]
        (diffusers multiplies the [B, 1, F, H, W] frame coordinates by it, so each item keeps its own rate)."""
        if not isinstance(frame_rate, torch.Tensor):
            return self.temporal_compression / frame_rate
        rates = frame_rate.detach().to("cpu", torch.float64).flatten()
        if bool((rates == rates[0]).all()):
            return self.temporal_compression / float(rates[0])  # one rate: the same number a scalar gives
        return (self.temporal_compression / rates).to(device, torch.float32).view(-1, 1, 1, 1, 1)

    def forward(self, noisy: torch.Tensor, audio_features: torch.Tensor, timestep: torch.Tensor, latent_frames: int,
                latent_height: int, latent_width: int, frame_rate: float | torch.Tensor) -> torch.Tensor:
        """``frame_rate``: frames per second of the pixel video, one number or one per item [B]."""
        batch_size, _, _ = noisy.shape
        if self.fixed_caption is not None:  # audio-free base: the same caption for every sample, attended globally
            tokens = self.fixed_caption(batch_size)
            mask = torch.ones(batch_size, tokens.shape[1], device=noisy.device)
        else:
            tokens = self.audio_tokens(audio_features)
            mask = self.attention_mask(batch_size, audio_features.shape[1], latent_frames, latent_height,
                                       latent_width, noisy.device)
        return self.predict(noisy, tokens, mask, timestep, latent_frames, latent_height, latent_width, frame_rate)

    def predict(self, noisy: torch.Tensor, caption_tokens: torch.Tensor, caption_mask: torch.Tensor,
                timestep: torch.Tensor, latent_frames: int, latent_height: int, latent_width: int,
                frame_rate: float | torch.Tensor) -> torch.Tensor:
        """The transformer's velocity for caption tokens made beforehand (inference projects a chunk's audio once,
        not at every step); :meth:`forward` makes them from features and calls this, so training and sampling give
        the transformer the same geometry.

        ``latent_frames/height/width``: the token grid (after the transformer's patching, :meth:`token_grid`);
        RoPE scales it by the VAE's compression and the frame rate (diffusers multiplies by the patch size itself).
        ``caption_mask``: :meth:`attention_mask`'s [B, audio tokens] or [B, video tokens, audio tokens].
        """
        rope_scale = (self.rope_time_scale(frame_rate, noisy.device), self.spatial_compression,
                      self.spatial_compression)
        dtype = next(self.transformer.parameters()).dtype
        return self.transformer(
            hidden_states=noisy.to(dtype), encoder_hidden_states=caption_tokens.to(dtype), timestep=timestep,
            encoder_attention_mask=caption_mask, num_frames=latent_frames, height=latent_height, width=latent_width,
            rope_interpolation_scale=rope_scale, return_dict=False,
        )[0]
