"""LoRA on the LTX-Video transformer (peft), saved and loaded in diffusers' format.

The saved file is what ``LTXImageToVideoPipeline.load_lora_weights(folder)`` reads:
``pytorch_lora_weights.safetensors`` with ``transformer.``-prefixed keys and the adapter config in the
safetensors metadata (without that metadata diffusers guesses ``lora_alpha = rank`` and the scale is wrong).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from avatar_gen.errors import UserError, first_line

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
DEFAULT_LORA_TARGETS = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
ADAPTER_NAME = "default"


def make_lora_config(rank: int, alpha: float, dropout: float = 0.0,
                     target_modules: Iterable[str] = DEFAULT_LORA_TARGETS) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      init_lora_weights=True)


def attach_lora(transformer: torch.nn.Module, lora_config: LoraConfig) -> list[str]:
    """Add a trainable adapter to ``transformer`` (base weights untouched); return the adapted module names."""
    try:
        transformer.add_adapter(lora_config, adapter_name=ADAPTER_NAME)
    except ValueError as exc:
        raise UserError(f"cannot attach LoRA with target_modules {sorted(lora_config.target_modules)}: {exc}") from None
    adapted = sorted({name.rsplit(".lora_", 1)[0] for name, _ in transformer.named_parameters() if ".lora_" in name})
    return adapted


def lora_parameters(transformer: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [parameter for name, parameter in transformer.named_parameters() if ".lora_" in name]


def save_lora(transformer: torch.nn.Module, lora_config: LoraConfig, directory: str | Path) -> Path:
    """Write the adapter as ``directory/pytorch_lora_weights.safetensors`` (fp32, diffusers format + metadata)."""
    from diffusers import LTXImageToVideoPipeline

    state = {name: tensor.detach().to("cpu", torch.float32).contiguous()
             for name, tensor in get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME).items()}
    LTXImageToVideoPipeline.save_lora_weights(
        str(directory), transformer_lora_layers=state, weight_name=LORA_WEIGHTS,
        transformer_lora_adapter_metadata=lora_config.to_dict())
    return Path(directory) / LORA_WEIGHTS


def load_lora(transformer: torch.nn.Module, directory: str | Path, trainable: bool = False) -> None:
    """Load a LoRA saved by :func:`save_lora` (or any diffusers LTX LoRA) into ``transformer`` as adapter
    ``default``."""
    from diffusers import LTXImageToVideoPipeline

    path = Path(directory) / LORA_WEIGHTS
    if not path.is_file():
        raise UserError(f"LoRA weights missing: {path}")
    from safetensors import SafetensorError

    try:
        state, metadata = LTXImageToVideoPipeline.lora_state_dict(str(directory), weight_name=LORA_WEIGHTS,
                                                                  return_lora_metadata=True)
    except (SafetensorError, OSError, ValueError):
        raise UserError(f"LoRA weights {path} could not be loaded (cut short, or not a safetensors file)") from None
    try:
        LTXImageToVideoPipeline.load_lora_into_transformer(state, transformer=transformer, adapter_name=ADAPTER_NAME,
                                                           metadata=metadata)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"LoRA {path} does not fit this transformer (different base model?): "
                        f"{first_line(exc)}") from None
    loaded = [name for name, _ in transformer.named_parameters() if ".lora_" in name]
    if not loaded:
        raise UserError(f"LoRA {path} matched no module of this transformer (different base model?)")
    for name, parameter in transformer.named_parameters():
        if ".lora_" in name:
            parameter.requires_grad_(trainable)
