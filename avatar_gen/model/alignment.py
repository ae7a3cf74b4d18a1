"""Which audio tokens each video token may attend to in cross-attention (``attn2``).

``global`` (the seed's behaviour): every video token sees every audio token.
``local``: a video token of latent frame ``f`` sees only the audio tokens of the pixel frames that latent
frame encodes, widened by ``margin_frames`` on both sides (Hallo3 / MultiTalk / FantasyTalking do the same).

The LTX VAE is causal in time with compression 8: latent frame 0 encodes pixel frame 0 alone, latent frame
``f > 0`` encodes pixel frames ``8(f-1)+1 .. 8f``.

The local mask is a boolean [B, video_tokens, audio_tokens] tensor (True = may attend) passed as the
transformer's ``encoder_attention_mask``.  diffusers' LTX transformer converts only 2-D masks into a bias;
a 3-D one reaches ``LTXVideoAttnProcessor`` unchanged, where ``prepare_attention_mask`` repeats it per head
and reshapes it to [B, heads, video_tokens, audio_tokens] for ``scaled_dot_product_attention``.  Boolean
masks give masked tokens exactly zero weight and work with any compute dtype.
"""

from __future__ import annotations

from typing import Literal

import torch

from avatar_gen.ltx import LTX_TEMPORAL_COMPRESSION

Alignment = Literal["global", "local"]


def latent_frame_pixel_window(latent_frame: int,
                              temporal_compression: int = LTX_TEMPORAL_COMPRESSION) -> tuple[int, int]:
    """Inclusive range of pixel frames encoded by ``latent_frame`` of a causal video VAE."""
    if latent_frame == 0:
        return 0, 0
    return temporal_compression * (latent_frame - 1) + 1, temporal_compression * latent_frame


def latent_frame_audio_mask(num_latent_frames: int, token_frame_index: torch.Tensor, margin_frames: int = 0,
                            temporal_compression: int = LTX_TEMPORAL_COMPRESSION) -> torch.Tensor:
    """[num_latent_frames, audio_tokens] bool: may latent frame ``f`` attend to audio token ``t``?

    ``token_frame_index`` [audio_tokens] gives each audio token's pixel frame.
    """
    starts, ends = zip(*(latent_frame_pixel_window(frame, temporal_compression) for frame in range(num_latent_frames)))
    device = token_frame_index.device
    starts = torch.tensor(starts, device=device)[:, None] - margin_frames
    ends = torch.tensor(ends, device=device)[:, None] + margin_frames
    frames = token_frame_index[None, :]
    return (frames >= starts) & (frames <= ends)


def local_attention_mask(batch_size: int, num_latent_frames: int, tokens_per_latent_frame: int,
                         token_frame_index: torch.Tensor, margin_frames: int = 0,
                         temporal_compression: int = LTX_TEMPORAL_COMPRESSION) -> torch.Tensor:
    """[B, video_tokens, audio_tokens] bool mask for packed video tokens in (frame, height, width) order."""
    per_frame = latent_frame_audio_mask(num_latent_frames, token_frame_index, margin_frames, temporal_compression)
    if not bool(per_frame.any(dim=1).all()):
        raise ValueError("some latent frame has no audio token in its window: audio shorter than the video?")
    per_token = per_frame.repeat_interleave(tokens_per_latent_frame, dim=0)
    return per_token[None].expand(batch_size, -1, -1)


def encoder_attention_mask(alignment: Alignment, batch_size: int, num_latent_frames: int, tokens_per_latent_frame: int,
                           token_frame_index: torch.Tensor, margin_frames: int = 0,
                           temporal_compression: int = LTX_TEMPORAL_COMPRESSION) -> torch.Tensor:
    """The ``encoder_attention_mask`` for the transformer: [B, audio_tokens] ones for ``global``
    (the same as a fully valid prompt mask), the 3-D boolean mask for ``local``."""
    if alignment == "global":
        return torch.ones(batch_size, token_frame_index.numel(), device=token_frame_index.device)
    if alignment == "local":
        return local_attention_mask(batch_size, num_latent_frames, tokens_per_latent_frame, token_frame_index,
                                    margin_frames, temporal_compression)
    raise ValueError(f"unknown alignment {alignment!r}")
