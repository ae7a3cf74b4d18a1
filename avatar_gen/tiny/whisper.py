"""A tiny, seeded, random Whisper checkpoint in openai-whisper's real file format.

``whisper.load_model(path)`` reads ``{"dims": ModelDimensions fields, "model_state_dict": ...}``.
The audio context (1500 positions = 30 s of mel frames after the stride-2 convolution) and the
multilingual vocabulary (51865 tokens: the tokenizer, language detection and timestamp rules all
index into it) must be the real ones; every width and depth is tiny.  Weights are stored as float16,
like the published checkpoints.  It transcribes garbage, quickly: it proves the code path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from avatar_gen.utils.io import atomic_path

TINY_WHISPER_FILE = "whisper-tiny.pt"  # the zoo entry: a single checkpoint file
TINY_WHISPER_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 64,
    "n_audio_head": 2,
    "n_audio_layer": 1,
    "n_vocab": 51865,
    "n_text_ctx": 16,  # decodes at most 8 tokens per 30 s window: keeps garbage transcription fast
    "n_text_state": 64,
    "n_text_head": 2,
    "n_text_layer": 1,
}


def write_tiny_whisper(out_dir: Path, seed: int = 0) -> Path:
    """Write ``<out_dir>/whisper-tiny.pt`` atomically and return its path."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    model = Whisper(ModelDimensions(**TINY_WHISPER_DIMS))
    # The text decoder's positional embedding is created with torch.empty (real checkpoints overwrite
    # it): fill it, or the checkpoint holds whatever was in memory, NaNs included.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    state = {name: tensor.half() if tensor.is_floating_point() else tensor
             for name, tensor in model.state_dict().items()}
    target = Path(out_dir) / TINY_WHISPER_FILE
    with atomic_path(target) as tmp:
        torch.save({"dims": dict(TINY_WHISPER_DIMS), "model_state_dict": state}, tmp)
    return target
