"""An untrained avatar checkpoint in the real format, for tests and benchmarks of inference.

It is written by the trainer's own :func:`avatar_gen.model.checkpoint.export_model` from a base transformer, a
seeded LoRA on ``attn2`` (random small weights, so that loading it changes the output) or the whole transformer, and
a freshly initialised audio projection.  It produces noise, like every model of the tiny zoo: it proves the
inference path, not quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avatar_gen.audio.features import AudioEncoderSpec, load_audio_encoder
from avatar_gen.model.audio_projection import AudioProjection, AudioProjectionConfig
from avatar_gen.ltx import LTX_SPATIAL_COMPRESSION, LTX_TEMPORAL_COMPRESSION
from avatar_gen.model.checkpoint import checkpoint_metadata, export_model, load_base_transformer
from avatar_gen.model.lora import attach_lora, lora_parameters, make_lora_config


def write_untrained_checkpoint(out_dir: str | Path, pretrained: str | Path, audio_encoder: AudioEncoderSpec,
                               video: dict[str, Any], alignment: str = "global", lora_rank: int | None = 4,
                               local_margin_frames: int = 0, tokens_per_frame: int = 1, hidden_dim: int = 64,
                               max_tokens: int = 128, seed: int = 0,
                               temporal_compression: int = LTX_TEMPORAL_COMPRESSION,
                               spatial_compression: int = LTX_SPATIAL_COMPRESSION,
                               continuation_max_frames: int = 0) -> Path:
    """Write a checkpoint folder at ``out_dir`` (``avatar_checkpoint.json`` + weights) and return it.

    ``video``: ``{height, width, num_frames, fps}`` the model is meant for (``num_frames`` = chunk length, 8k + 1).
    ``lora_rank``: LoRA on ``attn2`` of ``pretrained``'s transformer; None writes a full ``transformer/`` folder.
    ``temporal_compression``/``spatial_compression``: the factors of the VAE the checkpoint is meant for.
    ``continuation_max_frames``: what the metadata says training gave clean at most (a trained run's record; the
    weights stay untrained).
    """
    torch.manual_seed(seed)
    transformer = load_base_transformer(pretrained)
    feature_dim = load_audio_encoder(audio_encoder).feature_dim
    spec = audio_encoder.model_copy(update={"feature_dim": feature_dim})
    projection = AudioProjection(AudioProjectionConfig(
        feature_dim=feature_dim, caption_channels=transformer.config["caption_channels"],
        tokens_per_frame=tokens_per_frame, max_tokens=max_tokens, hidden_dim=hidden_dim))
    lora_config = None
    if lora_rank is not None:
        lora_config = make_lora_config(rank=lora_rank, alpha=lora_rank)
        attach_lora(transformer, lora_config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in lora_parameters(transformer):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    lora = None if lora_config is None else {"rank": lora_rank, "alpha": lora_rank, "dropout": 0.0,
                                             "target_modules": sorted(lora_config.target_modules)}
    metadata = checkpoint_metadata(0, str(pretrained), None, lora, spec.model_dump(mode="json"), video, alignment,
                                   local_margin_frames, temporal_compression, spatial_compression,
                                   continuation_max_frames=continuation_max_frames)
    out_dir = Path(out_dir)
    export_model(out_dir, transformer, projection, metadata, lora_config=lora_config)
    return out_dir
