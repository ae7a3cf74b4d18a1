"""Speed options of inference, each measured on/off by ``bench/bench_streaming.py`` and ``python -m bench.gpu``.

- :func:`set_attention_backend`: diffusers' attention dispatcher (``native`` = torch SDPA, which picks flash /
  memory-efficient / math kernels itself; ``_native_flash``, ``_native_efficient``, ``_native_cudnn``, ``_native_math``
  force one of torch's kernels; ``flash``, ``sage``, ... need their own packages).
- :func:`compile_transformer`: ``torch.compile`` of the transformer in place (the first denoising step pays the
  compilation; every later one runs the compiled graph).
- :func:`enable_vae_tiling`: the LTX VAE decodes in overlapping spatial tiles and temporal windows, bounding the
  decoder's memory at large sizes (tiles are blended, so frames differ slightly from an untiled decode).
- :func:`quantize_fp8`: FP8 weights (torchao's float8 weight-only quantisation of the transformer's linear layers)
  on GPUs with FP8 tensor cores (compute capability 8.9+: Ada, Hopper).  :func:`fp8_unavailable_reason` says why it
  cannot run here; nothing falls back silently.

Only torch (and diffusers, torchao when asked for) are imported, so ``bench.gpu`` can use this module on a machine
without the media stack.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from avatar_gen.errors import UserError

log = logging.getLogger(__name__)

# Backends of diffusers' dispatcher that torch itself provides (the others need extra packages).
TORCH_ATTENTION_BACKENDS = ("native", "_native_math", "_native_efficient", "_native_flash", "_native_cudnn", "flex")
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9) and Hopper (9.0) onwards


def set_attention_backend(transformer: torch.nn.Module, backend: str) -> None:
    """Route every attention of ``transformer`` through diffusers' ``backend`` (UserError for an unknown one)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    known = [member.value for member in AttentionBackendName]
    if backend not in known:
        raise UserError(f"unknown attention backend {backend!r}; choose one of {', '.join(known)}")
    try:
        transformer.set_attention_backend(backend)
    except (RuntimeError, ImportError, ValueError) as exc:  # its package or hardware is missing
        raise UserError(f"attention backend {backend} is not available here: {exc}") from None


def compile_transformer(transformer: torch.nn.Module, mode: str | None = None, backend: str = "inductor") -> None:
    """``torch.compile`` the transformer's forward in place (shapes are static within a request)."""
    transformer.compile(mode=mode, backend=backend, dynamic=False)


def enable_vae_tiling(vae: torch.nn.Module) -> None:
    """Decode in spatial tiles and temporal windows (diffusers' defaults for the LTX VAE)."""
    vae.enable_tiling()


def fp8_unavailable_reason(device: torch.device | str) -> str | None:
    """None when FP8 weights can run on ``device``; otherwise why not (one line)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"FP8 weights need a CUDA GPU with compute capability >= 8.9 (Ada, Hopper); device is {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        return f"FP8 weights need compute capability >= 8.9; {torch.cuda.get_device_name(device)} has " \
               f"{capability[0]}.{capability[1]}"
    if importlib.util.find_spec("torchao") is None:
        return "FP8 weights need the torchao package (pip install torchao matching this torch)"
    return None


def quantize_fp8(transformer: torch.nn.Module, device: torch.device | str) -> None:
    """Store the transformer's linear weights in FP8 (torchao float8 weight-only); UserError where unavailable."""
    reason = fp8_unavailable_reason(device)
    if reason is not None:
        raise UserError(reason)
    from torchao.quantization import Float8WeightOnlyConfig, quantize_

    quantize_(transformer, Float8WeightOnlyConfig())
    log.info("transformer weights stored in FP8 (torchao float8 weight-only)")
