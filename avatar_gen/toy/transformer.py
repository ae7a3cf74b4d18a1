"""The toy transformer and the pipeline folder that holds the toy world's base model."""

from __future__ import annotations

from pathlib import Path

import torch

from avatar_gen.toy.config import ToyTransformerSection
from avatar_gen.utils.io import atomic_folder

# The toy scheduler: LTX-Video's Euler flow-matching scheduler with a static shift instead of LTX's dynamic one. The
# toy's chunks always have the same size (128 x 128 x 25 frames = 1600 transformer tokens, where LTX's rule would give
# 3.2), and diffusers' dynamic rule counts latents before the transformer's 4x4 patching (25 600 here), which only
# matches the token count for patch size 1. configs/toy-base.yaml and train-toy.yaml train with the same shift.
TOY_SHIFT = 3.0
SCHEDULER_SETTINGS = {"shift": TOY_SHIFT, "use_dynamic_shifting": False, "shift_terminal": 0.1}


def build_toy_transformer(settings: ToyTransformerSection, latent_channels: int, seed: int):
    """A freshly initialised ``LTXVideoTransformer3DModel`` for ``latent_channels``-channel latents."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    channels = latent_channels * settings.patch_size**2
    width = settings.num_attention_heads * settings.attention_head_dim
    return LTXVideoTransformer3DModel(
        in_channels=channels, out_channels=channels, patch_size=settings.patch_size, patch_size_t=1,
        num_attention_heads=settings.num_attention_heads, attention_head_dim=settings.attention_head_dim,
        cross_attention_dim=width, num_layers=settings.num_layers, caption_channels=settings.caption_channels)


def write_pipeline_folder(target: Path, vae, transformer) -> Path:
    """An ``LTXImageToVideoPipeline`` folder (no text encoder: the caption slot is filled by the audio projection),
    written atomically; the project loads it like ``Lightricks/LTX-Video``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline

    pipeline = LTXImageToVideoPipeline(vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                                       scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_SETTINGS))
    with atomic_folder(target) as staging:
        pipeline.save_pretrained(staging, safe_serialization=True)
    return Path(target)
