"""A tiny random wav2vec2 in the Hugging Face folder format (what ``--wav2vec2 <folder>`` loads)."""

from __future__ import annotations

from pathlib import Path

import torch

from avatar_gen.media.audio import SAMPLE_RATE
from avatar_gen.utils.io import atomic_folder

TINY_WAV2VEC2_FOLDER = "wav2vec2"


def write_tiny_wav2vec2(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random wav2vec2 folder (``save_pretrained`` + feature-extractor config): hidden 32,
    2 layers, 2 heads, conv width 16 with wav2vec2-base's kernels and strides (so 50 frames/s, 25 ms field)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    model = Wav2Vec2Model(config).eval()
    feature_extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                                 do_normalize=True, return_attention_mask=False)

    target = Path(out_dir) / TINY_WAV2VEC2_FOLDER
    with atomic_folder(target) as staging:
        model.save_pretrained(str(staging))
        feature_extractor.save_pretrained(str(staging))
    return target
