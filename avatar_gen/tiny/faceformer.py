"""A tiny random FaceFormer, saved as a state dict with the official checkpoint's key names."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avatar_gen.audio.faceformer import FaceFormer, FaceFormerConfig, to_official_key_names, wav2vec2_base_config
from avatar_gen.utils.io import atomic_path

TINY_FACEFORMER_FILE = "faceformer.pth"


def tiny_faceformer(seed: int = 0) -> FaceFormer:
    """A tiny random FaceFormer with the official layout: 2-layer wav2vec2 (hidden 64, one 64-d head, conv
    width 32, wav2vec2-base's kernels and strides so timing is real), feature_dim 16, 5 vertices, period 30,
    3 subjects.  Not vocaset's shapes: those are tested by building a full-size state dict."""
    torch.manual_seed(seed)
    wav2vec2_config = wav2vec2_base_config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=128, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    config = FaceFormerConfig(feature_dim=16, vertice_dim=15, period=30, n_subjects=3, audio_hidden_dim=64)
    model = FaceFormer(config, wav2vec2_config)
    # The official init zeroes the motion decoder; give it values so that a round trip tests real numbers.
    nn.init.normal_(model.vertice_map_r.weight, std=0.02)
    return model.eval()


def write_tiny_faceformer(out_dir: Path, seed: int = 0) -> Path:
    """Write ``<out_dir>/faceformer.pth``: a tiny FaceFormer state dict with the official key names."""
    target = Path(out_dir) / TINY_FACEFORMER_FILE
    state_dict = to_official_key_names(tiny_faceformer(seed).state_dict())
    with atomic_path(target) as tmp:
        torch.save(state_dict, tmp)
    return target
