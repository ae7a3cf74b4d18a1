"""A fixed caption: what fills the caption slot when a transformer is pretrained without audio.

LTX-Video 2B was pretrained as a text/image-to-video model and knows nothing about speech; the avatar recipe teaches
it speech through the caption slot.  A small base pretrained here (the toy world, docs/toy.md) should be in the same
state: it learns to animate a still first frame while its caption slot holds one fixed embedding, the same for every
sample, so it carries no information.  The embedding is seeded random Gaussian noise (not trained), saved beside the
checkpoint so that a diffusers pipeline can be driven with exactly what the base saw (``prompt_embeds``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field, ValidationError
from safetensors.torch import save_file
from torch import nn

from avatar_gen.config import StrictModel
from avatar_gen.errors import UserError, first_line
from avatar_gen.utils.datafiles import load_json, load_safetensors_file
from avatar_gen.utils.io import atomic_path, atomic_write_json

FIXED_CAPTION_WEIGHTS = "fixed_caption.safetensors"
FIXED_CAPTION_CONFIG = "fixed_caption.json"


class FixedCaptionConfig(StrictModel):
    tokens: int = Field(ge=1, description="caption tokens")
    caption_channels: int = Field(ge=1, description="their width: the transformer's caption_channels")
    seed: int = Field(default=0, description="seed of the Gaussian embedding")


class FixedCaption(nn.Module):
    """The embedding [tokens, caption_channels] (a buffer: never trained), repeated over the batch."""

    def __init__(self, config: FixedCaptionConfig):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        self.register_buffer("embedding", torch.randn(config.tokens, config.caption_channels, generator=generator))

    def forward(self, batch_size: int) -> torch.Tensor:
        """[batch_size, tokens, caption_channels]."""
        return self.embedding[None].expand(batch_size, -1, -1)

    def save(self, directory: str | Path) -> None:
        """Write ``fixed_caption.safetensors`` (``{"embedding": [tokens, caption_channels]}``, fp32) and its config."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / FIXED_CAPTION_WEIGHTS) as tmp:
            save_file({"embedding": self.embedding.detach().to("cpu", torch.float32).contiguous()}, str(tmp))
        atomic_write_json(directory / FIXED_CAPTION_CONFIG, self.config.model_dump(mode="json"))

    @classmethod
    def load(cls, directory: str | Path) -> FixedCaption:
        directory = Path(directory)
        for name in (FIXED_CAPTION_CONFIG, FIXED_CAPTION_WEIGHTS):
            if not (directory / name).is_file():
                raise UserError(f"fixed caption file missing: {directory / name}")
        try:
            recorded = load_json(directory / FIXED_CAPTION_CONFIG, "fixed caption config")
            config = FixedCaptionConfig.model_validate(recorded)
        except ValidationError as exc:
            raise UserError(f"{directory / FIXED_CAPTION_CONFIG}: {first_line(exc)}") from None
        caption = cls(config)
        saved = load_safetensors_file(directory / FIXED_CAPTION_WEIGHTS, "fixed caption").get("embedding")
        if saved is None or not torch.equal(saved, caption.embedding):
            raise UserError(f"{directory / FIXED_CAPTION_WEIGHTS} is not the embedding its config's seed gives")
        return caption
