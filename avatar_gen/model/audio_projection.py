"""Audio projection: per-frame speech features -> tokens in the transformer's caption slot.

LTX-Video's cross-attention (``attn2``) reads ``encoder_hidden_states`` of width ``caption_channels``
(4096 for the real model, T5's width).  We fill that slot with tokens made from the chunk's audio features,
``tokens_per_frame`` tokens per video frame, each carrying an embedding of its frame index: cross-attention
has no positional encoding of its own, so without it a video token could not tell which audio token belongs
to its moment in time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, ValidationError
from safetensors.torch import save_file
from torch import nn

from avatar_gen.config import StrictModel
from avatar_gen.errors import UserError
from avatar_gen.utils.datafiles import load_json, load_safetensors_file
from avatar_gen.utils.io import atomic_path, atomic_write_json

PROJECTION_WEIGHTS = "audio_projection.safetensors"
PROJECTION_CONFIG = "audio_projection.json"
# LTX-Video's T5 prompt length: the real transformer was trained on at most this many caption tokens.
REAL_MAX_CAPTION_TOKENS = 128


class AudioProjectionConfig(StrictModel):
    """Shape of the projection; saved as ``audio_projection.json`` beside its weights."""

    feature_dim: int = Field(ge=1, description="D of the per-frame audio features [F, D]")
    caption_channels: int = Field(ge=1, description="output width; must equal the transformer's caption_channels")
    tokens_per_frame: int = Field(default=1, ge=1, le=8, description="audio tokens per video frame")
    max_tokens: int = Field(default=REAL_MAX_CAPTION_TOKENS, ge=1, description="longest token sequence accepted")
    hidden_dim: int = Field(default=1024, ge=1, description="width of the MLP's hidden layer")
    position_embedding: Literal["learned", "sinusoidal", "none"] = Field(
        default="learned", description="how each token learns its frame index")
    input_norm: Literal["layer", "none"] = Field(
        default="layer", description="LayerNorm of each frame's features (learned encoders), or none (logmel: a "
                                     "per-frame norm would remove the frame's loudness, its mean log energy)")

    @property
    def max_frames(self) -> int:
        return self.max_tokens // self.tokens_per_frame


def sinusoidal_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sin/cos embedding of integer ``positions`` [N] -> [N, dim]."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=positions.device)
    frequencies = torch.exp(-math.log(10000.0) * steps / max(half, 1))
    angles = positions.float()[:, None] * frequencies[None]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding


class AudioProjection(nn.Module):
    """Per-frame audio features [B, F, D] -> caption tokens [B, F * tokens_per_frame, caption_channels].

    Token ``t`` belongs to video frame ``t // tokens_per_frame`` (see :meth:`token_frame_index`).
    """

    def __init__(self, config: AudioProjectionConfig):
        super().__init__()
        self.config = config
        width = config.caption_channels
        self.input_norm = nn.LayerNorm(config.feature_dim) if config.input_norm == "layer" else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(config.feature_dim, config.hidden_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.hidden_dim, config.tokens_per_frame * width),
        )
        if config.position_embedding == "learned":
            self.frame_embedding = nn.Embedding(config.max_frames, width)
            nn.init.normal_(self.frame_embedding.weight, std=0.02)
        else:
            self.frame_embedding = None
        if config.tokens_per_frame > 1:
            self.sub_token_embedding = nn.Parameter(torch.randn(config.tokens_per_frame, width) * 0.02)
        else:
            self.sub_token_embedding = None

    def num_tokens(self, num_frames: int) -> int:
        return num_frames * self.config.tokens_per_frame

    def token_frame_index(self, num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
        """[T] long: the video (pixel) frame each output token belongs to."""
        return torch.arange(num_frames, device=device).repeat_interleave(self.config.tokens_per_frame)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 3 or features.shape[-1] != self.config.feature_dim:
            raise UserError(f"audio features must be [batch, frames, {self.config.feature_dim}], "
                            f"got {tuple(features.shape)}")
        batch, num_frames, _ = features.shape
        if self.num_tokens(num_frames) > self.config.max_tokens:
            raise UserError(
                f"{num_frames} frames x {self.config.tokens_per_frame} tokens/frame = "
                f"{self.num_tokens(num_frames)} audio tokens, more than the projection's "
                f"max_tokens={self.config.max_tokens}")
        width = self.config.caption_channels
        dtype = self.mlp[0].weight.dtype
        tokens = self.mlp(self.input_norm(features.to(dtype)))
        tokens = tokens.view(batch, num_frames, self.config.tokens_per_frame, width)
        frames = torch.arange(num_frames, device=features.device)
        if self.frame_embedding is not None:
            tokens = tokens + self.frame_embedding(frames)[None, :, None, :]
        elif self.config.position_embedding == "sinusoidal":
            tokens = tokens + sinusoidal_embedding(frames, width).to(tokens.dtype)[None, :, None, :]
        if self.sub_token_embedding is not None:
            tokens = tokens + self.sub_token_embedding[None, None]
        return tokens.reshape(batch, num_frames * self.config.tokens_per_frame, width)

    def save(self, directory: str | Path) -> None:
        """Write ``audio_projection.safetensors`` (fp32) and ``audio_projection.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().to("cpu", torch.float32).contiguous()
                 for name, tensor in self.state_dict().items()}
        with atomic_path(directory / PROJECTION_WEIGHTS) as tmp:
            save_file(state, str(tmp))
        atomic_write_json(directory / PROJECTION_CONFIG, self.config.model_dump(mode="json"))

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> AudioProjection:
        directory = Path(directory)
        config_path, weights_path = directory / PROJECTION_CONFIG, directory / PROJECTION_WEIGHTS
        for path in (config_path, weights_path):
            if not path.is_file():
                raise UserError(f"audio projection file missing: {path}")
        try:
            config = AudioProjectionConfig.model_validate(load_json(config_path, "audio projection config"))
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise UserError(f"audio projection config {config_path}: {'.'.join(map(str, problem['loc']))}: "
                            f"{problem['msg']}") from None
        projection = cls(config)
        state = load_safetensors_file(weights_path, "audio projection weights")
        expected = projection.state_dict()
        mismatched = [name for name, tensor in state.items()
                      if name in expected and tensor.shape != expected[name].shape]
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        if mismatched or missing or unexpected:
            raise UserError(
                f"{weights_path} does not match {config_path} (projection size differs): "
                f"shape mismatch {mismatched[:3]}, missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        projection.load_state_dict(state)
        return projection.to(device=device, dtype=dtype)
