"""Every GPU figure in one command: inference, training, audio and VAE stages of the full-size architectures.

    python -m bench.gpu                # one H100/H200: full-size random weights, about 6 min (<= 8 min)
    python -m bench.gpu --smoke        # the same code paths on tiny models on a CPU (seconds; runs in make test)

Offline: every model is built from its architecture with random weights (no download) — LTX-Video 2B's transformer
(diffusers' ``LTXVideoTransformer3DModel`` defaults), the LTX VAE (``AutoencoderKLLTXVideo`` defaults), wav2vec2-base
(``Wav2Vec2Config`` defaults) and the audio projection; random weights cost what trained ones cost.  Writes
``bench/gpu-results/gpu-<card>.json`` and ``.md`` (a Markdown table), named after the card: commit them.

Figures:
- inference at 768x512 for 10 s of speech (250 frames at 25 fps, chunks of 121 frames) through the streaming engine
  (:func:`avatar_gen.inference.streaming.stream_chunks`, with the sampling loop and decoding of
  :class:`avatar_gen.inference.sampler.ChunkSampler`, as ``AvatarGenerator`` runs them): compute
  seconds per video second and time to the first second's frames, for 30 steps with audio guidance and for the
  distilled 8-step schedule, each with ``torch.compile`` off and on (compilation time reported apart); peak memory;
- levers at the same inputs, each a ratio off/on: attention backend (``native`` SDPA vs the math kernel), FP8
  weights (torchao; reported unavailable where it cannot run), VAE tiling for a large decode (1216x704);
- training at 768x512x97, bf16, LoRA rank 64 on ``attn2`` + the audio projection, batch 1: seconds per step and peak
  memory with and without gradient checkpointing;
- wav2vec2-base over 10 s of audio and VAE encoding of 97 frames at 768x512: throughput.

The GPU machine has torch, transformers and peft but not diffusers: carry the wheels listed in docs/inference.md.
Imports stay few (torch, numpy, diffusers, transformers, peft, pydantic and torch-only modules of this repository);
``tests/test_bench_gpu.py`` checks it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger("bench.gpu")

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Profile:
    """Sizes and model configs of one run (``full``: the real architectures; ``smoke``: tiny, for a CPU)."""

    name: str
    height: int
    width: int
    speech_seconds: float
    fps: float
    chunk_frames: int
    steps: int
    guidance: float
    train_frames: int
    lora_rank: int
    large_height: int  # the VAE tiling lever decodes at this size
    large_width: int
    large_frames: int
    transformer: dict[str, Any] = field(default_factory=dict)
    vae: dict[str, Any] = field(default_factory=dict)
    wav2vec2: dict[str, Any] = field(default_factory=dict)
    projection_hidden: int = 1024
    repeats: int = 3  # timed repeats of each training step and throughput measurement
    warmup: bool = True  # an untimed run before each timed one (kernels, allocator, autotuning)
    compile_all_schedules: bool = True  # smoke: compile is traced for the first schedule only


FULL = Profile(name="full", height=512, width=768, speech_seconds=10.0, fps=25.0, chunk_frames=121, steps=30,
               guidance=3.0, train_frames=97, lora_rank=64, large_height=704, large_width=1216, large_frames=121)
SMOKE = Profile(
    name="smoke", height=64, width=64, speech_seconds=1.2, fps=25.0, chunk_frames=17, steps=2, guidance=3.0,
    train_frames=17, lora_rank=4, large_height=128, large_width=128, large_frames=17, repeats=1, warmup=False,
    compile_all_schedules=False,
    transformer=dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16,
                     cross_attention_dim=32, num_layers=2, caption_channels=32),
    vae=dict(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
             layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1)),
    wav2vec2=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  conv_dim=(32, 32, 32, 32, 32, 32, 32), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
    projection_hidden=32,
)
DISTILLED_STEPS_NAME = "distilled_8"


def card_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # resets this process's peak resident size (VmHWM)


def peak_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since :func:`reset_peak` (CPU: the process's peak resident size), GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    started = time.perf_counter()
    result = work()
    synchronize(device)
    return time.perf_counter() - started, result


# ------------------------------------------------------------------------------------------------ models

def build_models(profile: Profile, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Random-weight transformer, VAE, scheduler, wav2vec2 and audio projection of ``profile``, on ``device``."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from avatar_gen.model.audio_projection import AudioProjection, AudioProjectionConfig

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 2B model initialised on a CPU takes minutes
        transformer = LTXVideoTransformer3DModel(**profile.transformer).to(dtype)
        vae = AutoencoderKLLTXVideo(**profile.vae).to(dtype)
        wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(**profile.wav2vec2)).to(dtype)
        projection = AudioProjection(AudioProjectionConfig(
            feature_dim=wav2vec2.config.hidden_size, caption_channels=transformer.config.caption_channels,
            max_tokens=profile.chunk_frames + 7, hidden_dim=profile.projection_hidden))
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    transformer.eval(), vae.eval(), wav2vec2.eval()
    # LTX-Video's scheduler settings (the tiny zoo and the real scheduler_config.json use the same).
    scheduler_config = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                            max_image_seq_len=4096, shift_terminal=0.1)
    return {"transformer": transformer, "vae": vae, "scheduler_config": scheduler_config, "wav2vec2": wav2vec2,
            "projection": projection}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


# ------------------------------------------------------------------------------------------------ inference

def speech_like_audio(seconds: float, sample_rate: int = 16_000) -> np.ndarray:
    """A voiced, syllable-modulated tone: what the audio encoder costs does not depend on its content."""
    time_axis = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 140 * time_axis) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * time_axis))) \
        .astype(np.float32)


@torch.no_grad()
def audio_features(models: dict, audio: np.ndarray, frames: int, fps: float, device: torch.device) -> torch.Tensor:
    """wav2vec2 hidden states resampled to one row per video frame: [frames, D] (as the audio stage aligns them)."""
    wav2vec2 = models["wav2vec2"]
    dtype = next(wav2vec2.parameters()).dtype
    hidden = wav2vec2(torch.from_numpy(audio)[None].to(device, dtype)).last_hidden_state  # [1, T, D] at 50 Hz
    rows = torch.nn.functional.interpolate(hidden.transpose(1, 2).float(), size=frames, mode="linear",
                                           align_corners=False)
    return rows[0].transpose(0, 1)


@torch.no_grad()
def chunk_conditioning(models: dict, features: torch.Tensor, silence: torch.Tensor | None, chunks, dtype):
    from avatar_gen.inference.sampler import ChunkConditioning

    projection = models["projection"]
    result = []
    for chunk in chunks:
        embeds = [None if rows is None else projection(rows[chunk.start:chunk.end][None]).to(dtype)
                  for rows in (features, silence)]
        mask = torch.ones(1, embeds[0].shape[1], device=embeds[0].device)
        result.append(ChunkConditioning(embeds[0], mask, embeds[1], mask if silence is not None else None))
    return result


def make_sampler(models: dict, device: torch.device):
    """The inference loop over the current transformer (global alignment, LTX's compression)."""
    from avatar_gen.inference.sampler import ChunkSampler
    from avatar_gen.model.denoiser import AvatarDenoiser

    denoiser = AvatarDenoiser(models["transformer"], models["projection"])
    return ChunkSampler(denoiser, models["vae"], models["scheduler_config"], device)


def run_inference(models: dict, profile: Profile, device: torch.device, dtype: torch.dtype, steps: int,
                  guidance: float, timesteps: list[float] | None, overlap: bool = True) -> dict[str, float]:
    """One request through the streaming engine: seconds to the first second's frames, total, per video second."""
    from avatar_gen.inference.schedule import frames_for_duration, plan_chunks
    from avatar_gen.inference.streaming import stream_chunks

    sampler = make_sampler(models, device)
    total_frames = frames_for_duration(profile.speech_seconds, profile.fps)
    chunks = plan_chunks(total_frames, profile.chunk_frames)
    portrait = np.random.default_rng(0).integers(0, 256, (profile.height, profile.width, 3), dtype=np.uint8)
    audio = speech_like_audio(profile.speech_seconds)
    generator = torch.Generator(device=device).manual_seed(0)
    synchronize(device)
    started = time.perf_counter()
    features_seconds, features = timed(device, lambda: audio_features(models, audio, chunks[-1].end,
                                                                       profile.fps, device))
    silence = audio_features(models, np.zeros_like(audio), chunks[-1].end, profile.fps, device) \
        if guidance > 1 else None
    conditioning = chunk_conditioning(models, features, silence, chunks, dtype)

    def denoise(index, frame, inputs, plan, step_done):
        return sampler.denoise(inputs, plan.num_frames, profile.height, profile.width, profile.fps, steps, guidance,
                               generator, image=frame, timesteps=timesteps, on_step=step_done)

    def decode(latents, plan):
        return sampler.decode(latents, plan.num_frames, profile.height, profile.width, generator, 0.05, 0.025)

    first_second, delivered = None, 0
    for chunk in stream_chunks(chunks, conditioning, portrait, total_frames, denoise, decode, overlap=overlap):
        delivered = chunk.end_frame
        if first_second is None and delivered >= min(total_frames, round(profile.fps)):
            first_second = time.perf_counter() - started
    synchronize(device)
    total = time.perf_counter() - started
    video_seconds = total_frames / profile.fps
    return {"total_s": round(total, 3), "first_second_s": round(first_second, 3),
            "first_second_fraction": round(first_second / total, 3),
            "compute_s_per_video_s": round(total / video_seconds, 3), "audio_features_s": round(features_seconds, 4),
            "chunks": len(chunks), "frames": total_frames}


def inference_figures(models: dict, profile: Profile, device: torch.device, dtype: torch.dtype,
                      compile_backend: str) -> dict[str, Any]:
    from avatar_gen.inference.schedule import DISTILLED_TIMESTEPS
    from avatar_gen.inference.speed import compile_transformer

    schedules = {f"regular_{profile.steps}_guidance_{profile.guidance:g}": (profile.steps, profile.guidance, None),
                 DISTILLED_STEPS_NAME: (len(DISTILLED_TIMESTEPS), 1.0, list(DISTILLED_TIMESTEPS))}
    figures: dict[str, Any] = {}
    reset_peak(device)
    for name, (steps, guidance, timesteps) in schedules.items():
        if profile.warmup:
            run_inference(models, profile, device, dtype, steps, guidance, timesteps)
        figures[f"{name}/compile_off"] = run_inference(models, profile, device, dtype, steps, guidance, timesteps)
    figures["peak_memory_gib"] = round(peak_gib(device), 2)
    # Overlap lever: the engine without its worker thread (here the consumer only collects frames; the H.264
    # encoding that overlap hides is measured by bench/bench_streaming.py on a CPU).
    name, (steps, guidance, timesteps) = next(iter(schedules.items()))
    sequential = run_inference(models, profile, device, dtype, steps, guidance, timesteps, overlap=False)
    figures["lever_overlap_off_over_on"] = round(sequential["total_s"] / figures[f"{name}/compile_off"]["total_s"], 3)

    transformer = models["transformer"]
    compile_seconds, _ = timed(device, lambda: compile_transformer(transformer, backend=compile_backend))
    for name, (steps, guidance, timesteps) in list(schedules.items())[:None if profile.compile_all_schedules else 1]:
        first, _ = timed(device, lambda steps=steps, guidance=guidance, timesteps=timesteps: run_inference(
            models, profile, device, dtype, steps, guidance, timesteps))
        figures[f"{name}/compile_on"] = run_inference(models, profile, device, dtype, steps, guidance, timesteps)
        figures[f"{name}/compile_on"]["first_call_s"] = round(first, 2)
        figures[f"lever_compile_off_over_on/{name}"] = round(
            figures[f"{name}/compile_off"]["total_s"] / figures[f"{name}/compile_on"]["total_s"], 3)
    figures["compile_backend"] = compile_backend
    torch._dynamo.reset()
    models["transformer"] = _uncompiled(transformer)
    regular = next(iter(schedules))
    figures["lever_distilled_speedup"] = round(
        figures[f"{regular}/compile_off"]["total_s"] / figures[f"{DISTILLED_STEPS_NAME}/compile_off"]["total_s"], 3)
    return figures


def _uncompiled(transformer: torch.nn.Module) -> torch.nn.Module:
    """Undo ``Module.compile`` (it only sets ``_compiled_call_impl``)."""
    transformer._compiled_call_impl = None
    return transformer


def attention_lever(models: dict, profile: Profile, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """One chunk's denoising with the math kernel and with torch SDPA's own choice (``native``)."""
    from avatar_gen.inference.speed import set_attention_backend

    seconds = {}
    for backend in ("_native_math", "native"):
        set_attention_backend(models["transformer"], backend)
        if profile.warmup:
            run_inference(models, profile, device, dtype, 2, profile.guidance, None)
        seconds[backend] = run_inference(models, profile, device, dtype, 2, profile.guidance, None)["total_s"]
    return {"seconds": seconds, "lever_math_over_native": round(seconds["_native_math"] / seconds["native"], 3)}


def fp8_lever(models: dict, profile: Profile, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    from avatar_gen.inference.speed import fp8_unavailable_reason, quantize_fp8

    import copy

    from avatar_gen.inference.schedule import DISTILLED_TIMESTEPS

    reason = fp8_unavailable_reason(device)
    if reason is not None:
        return {"available": False, "reason": reason}
    # The distilled schedule (8 steps, no guidance) keeps this lever short; a quantised copy leaves the bf16
    # transformer as it was for the training figures.
    schedule = (len(DISTILLED_TIMESTEPS), 1.0, list(DISTILLED_TIMESTEPS))
    off = run_inference(models, profile, device, dtype, *schedule)
    original = models["transformer"]
    models["transformer"] = copy.deepcopy(original)
    try:
        quantize_fp8(models["transformer"], device)
        run_inference(models, profile, device, dtype, *schedule)
        on = run_inference(models, profile, device, dtype, *schedule)
    finally:
        models["transformer"] = original
    return {"available": True, "schedule": DISTILLED_STEPS_NAME, "bf16_s": off["total_s"], "fp8_s": on["total_s"],
            "lever_bf16_over_fp8": round(off["total_s"] / on["total_s"], 3)}


@torch.no_grad()
def vae_tiling_lever(models: dict, profile: Profile, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Decode one large chunk with and without tiling: seconds and peak memory."""
    vae = models["vae"]
    latent_shape = (1, vae.config.latent_channels, (profile.large_frames - 1) // 8 + 1, profile.large_height // 32,
                    profile.large_width // 32)
    latents = torch.randn(latent_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    figures: dict[str, Any] = {"size": f"{profile.large_width}x{profile.large_height}x{profile.large_frames}"}
    outputs = {}
    for tiling in (False, True):
        vae.use_tiling = tiling
        if profile.warmup:
            vae.decode(latents, return_dict=False)
        reset_peak(device)
        seconds, pixels = timed(device, lambda: vae.decode(latents, return_dict=False)[0])
        outputs[tiling] = pixels.float()
        key = "on" if tiling else "off"
        figures[f"tiling_{key}_s"], figures[f"tiling_{key}_peak_gib"] = round(seconds, 3), round(peak_gib(device), 2)
    vae.use_tiling = False
    figures["lever_time_off_over_on"] = round(figures["tiling_off_s"] / figures["tiling_on_s"], 3)
    figures["lever_memory_off_over_on"] = round(figures["tiling_off_peak_gib"] / figures["tiling_on_peak_gib"], 3)
    figures["max_pixel_difference"] = round(float((outputs[True] - outputs[False]).abs().max()) * 127.5, 2)
    return figures


# ------------------------------------------------------------------------------------------------ training

def training_figures(models: dict, profile: Profile, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """s/step and peak memory of a LoRA step (rank ``lora_rank`` on attn2, projection trained), with and without
    gradient checkpointing: the trainer's step (noise, shifted logit-normal sigma, first frame clean, flow loss)."""
    from avatar_gen.model.flow import (first_frame_token_mask, flow_loss, make_flow_inputs, sample_sigmas,
                                       token_count_shift)
    from avatar_gen.model.lora import attach_lora, lora_parameters, make_lora_config

    transformer, projection = models["transformer"], models["projection"]
    attach_lora(transformer, make_lora_config(rank=profile.lora_rank, alpha=profile.lora_rank))
    for name, parameter in transformer.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    for parameter in lora_parameters(transformer):
        parameter.data = parameter.data.float()  # LoRA weights train in fp32 (the base stays bf16)
    projection.float().train()
    trainable = lora_parameters(transformer) + list(projection.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    latent_frames, latent_height, latent_width = (profile.train_frames - 1) // 8 + 1, profile.height // 32, \
        profile.width // 32
    channels = transformer.config.in_channels
    tokens_per_frame = latent_height * latent_width
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(1, latent_frames * tokens_per_frame, channels, generator=generator).to(device)
    features = torch.randn(1, profile.train_frames, models["wav2vec2"].config.hidden_size, generator=generator) \
        .to(device)
    shift = token_count_shift(clean.shape[1])

    def step() -> None:
        sigmas = sample_sigmas(1, shift, generator=generator, device=device)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        condition = first_frame_token_mask(1, latent_frames, tokens_per_frame, torch.ones(1, dtype=torch.bool,
                                                                                          device=device))
        inputs = make_flow_inputs(clean, noise, sigmas, condition)
        tokens = projection(features)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            prediction = transformer(
                hidden_states=inputs.noisy.to(dtype), encoder_hidden_states=tokens.to(dtype),
                timestep=inputs.timestep, encoder_attention_mask=torch.ones(1, tokens.shape[1], device=device),
                num_frames=latent_frames, height=latent_height, width=latent_width,
                rope_interpolation_scale=(8 / profile.fps, 32, 32), return_dict=False)[0]
        flow_loss(prediction, inputs).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    transformer.train()
    figures: dict[str, Any] = {"trainable_parameters": sum(parameter.numel() for parameter in trainable),
                               "video": f"{profile.width}x{profile.height}x{profile.train_frames}"}
    for checkpointing in (False, True):
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        if profile.warmup or not checkpointing:
            step()  # the first step also creates the optimizer state
        reset_peak(device)
        times = [timed(device, step)[0] for _ in range(profile.repeats)]
        key = "checkpointing_on" if checkpointing else "checkpointing_off"
        figures[key] = {"s_per_step": round(statistics.median(times), 3), "peak_memory_gib": round(peak_gib(device), 2)}
    transformer.disable_gradient_checkpointing()
    transformer.eval()
    return figures


# ------------------------------------------------------------------------------------------------ stages

@torch.no_grad()
def stage_figures(models: dict, profile: Profile, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    audio = speech_like_audio(profile.speech_seconds)
    frames = int(profile.speech_seconds * profile.fps)
    if profile.warmup:
        audio_features(models, audio, frames, profile.fps, device)
    times = [timed(device, lambda: audio_features(models, audio, frames, profile.fps, device))[0]
             for _ in range(profile.repeats)]
    audio_seconds = statistics.median(times)
    vae = models["vae"]
    video = torch.rand(1, 3, profile.train_frames, profile.height, profile.width,
                       generator=torch.Generator().manual_seed(0)).to(device, dtype) * 2 - 1
    if profile.warmup:
        vae.encode(video)
    times = [timed(device, lambda: vae.encode(video).latent_dist.mean)[0] for _ in range(profile.repeats)]
    encode_seconds = statistics.median(times)
    return {"wav2vec2": {"audio_s": profile.speech_seconds, "seconds": round(audio_seconds, 4),
                         "audio_s_per_s": round(profile.speech_seconds / audio_seconds, 1)},
            "vae_encode": {"video": f"{profile.width}x{profile.height}x{profile.train_frames}",
                           "seconds": round(encode_seconds, 3),
                           "frames_per_s": round(profile.train_frames / encode_seconds, 1)}}


# ------------------------------------------------------------------------------------------------ report

def markdown_table(report: dict[str, Any]) -> str:
    inference = report["inference"]
    lines = [f"# GPU benchmark: {report['card']}", "",
             f"`python -m bench.gpu{' --smoke' if report['profile'] == 'smoke' else ''}` on {report['date']}: "
             f"torch {report['torch']}, {report['dtype']}, {report['profile']} profile, random weights "
             f"(transformer {report['parameters']['transformer'] / 1e9:.2f} B parameters).", "",
             "| inference (10 s of speech) | compute s / video s | first second after (s) | total (s) |",
             "|---|---|---|---|"]
    for key, figures in inference.items():
        if isinstance(figures, dict) and "total_s" in figures:
            lines.append(f"| {key} | {figures['compute_s_per_video_s']} | {figures['first_second_s']} | "
                         f"{figures['total_s']} |")
    lines += ["", f"Peak memory (inference): {inference['peak_memory_gib']} GiB.", "",
              "| training step | s / step | peak memory (GiB) |", "|---|---|---|"]
    for key in ("checkpointing_off", "checkpointing_on"):
        figures = report["training"][key]
        lines.append(f"| {report['training']['video']} LoRA, gradient {key.replace('_', ' ')} | "
                     f"{figures['s_per_step']} | {figures['peak_memory_gib']} |")
    stages = report["stages"]
    lines += ["", "| stage | throughput |", "|---|---|",
              f"| wav2vec2-base | {stages['wav2vec2']['audio_s_per_s']} s of audio per s |",
              f"| VAE encode {stages['vae_encode']['video']} | {stages['vae_encode']['frames_per_s']} frames per s |",
              "", "| lever | off / on |", "|---|---|"]
    for name, value in report["levers"].items():
        lines.append(f"| {name} | {value} |")
    return "\n".join(lines) + "\n"


def run(profile: Profile, device: torch.device, dtype: torch.dtype, out_dir: Path, compile_backend: str) -> dict:
    started = time.perf_counter()
    models = build_models(profile, device, dtype)
    log.info("built random %s models on %s in %.1f s", profile.name, device, time.perf_counter() - started)
    report: dict[str, Any] = {
        "card": card_name(device), "profile": profile.name, "device": str(device), "dtype": str(dtype).split(".")[-1],
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "parameters": {name: parameter_count(models[name]) for name in ("transformer", "vae", "wav2vec2")},
    }
    report["stages"] = stage_figures(models, profile, device, dtype)
    report["inference"] = inference_figures(models, profile, device, dtype, compile_backend)
    report["attention"] = attention_lever(models, profile, device, dtype)
    report["vae_tiling"] = vae_tiling_lever(models, profile, device, dtype)
    report["fp8"] = fp8_lever(models, profile, device, dtype)
    report["training"] = training_figures(models, profile, device, dtype)
    inference = report["inference"]
    report["levers"] = {
        "overlap (engine without its worker thread / with)": inference["lever_overlap_off_over_on"],
        **{f"torch.compile ({name.split('/')[1]})": value for name, value in inference.items()
           if name.startswith("lever_compile")},
        "attention: math kernel / native SDPA": report["attention"]["lever_math_over_native"],
        "distilled 8 steps (speed-up over regular)": inference["lever_distilled_speedup"],
        "VAE tiling, time": report["vae_tiling"]["lever_time_off_over_on"],
        "VAE tiling, peak memory": report["vae_tiling"]["lever_memory_off_over_on"],
        "FP8 weights": report["fp8"].get("lever_bf16_over_fp8", "unavailable: " + report["fp8"].get("reason", "")),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-{slug(report['card'])}" + ("-smoke" if profile.name == "smoke" else "")
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown_table(report))
    report["files"] = [str(out_dir / f"{stem}.json"), str(out_dir / f"{stem}.md")]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: the same code paths, seconds")
    parser.add_argument("--device", default=None, help="default: cuda when available (smoke: cpu)")
    parser.add_argument("--out", default=None,
                        help="folder for gpu-<card>.json and .md (default bench/gpu-results/, tracked by git, so a "
                             "card's figures are committed; smoke: bench/results/, ignored)")
    parser.add_argument("--compile_backend", default=None,
                        help="torch.compile backend (default inductor; smoke: eager, which traces without codegen)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = SMOKE if args.smoke else FULL
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    if device.type == "cpu" and not args.smoke:
        sys.stderr.write("error: the full benchmark needs a CUDA GPU (use --smoke on a CPU)\n")
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    out_dir = Path(args.out) if args.out else HERE / ("results" if args.smoke else "gpu-results")
    report = run(profile, device, dtype, out_dir, args.compile_backend or ("eager" if args.smoke else "inductor"))
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
