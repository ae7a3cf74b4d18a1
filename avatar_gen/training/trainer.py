"""One training loop for a single process (CPU or one GPU) and DeepSpeed (N ranks, ZeRO).

The launcher is the only difference: ``python ltx_video/training.py --config ...`` runs one process;
``deepspeed --num_gpus=N`` / ``torchrun`` start N ranks (WORLD_SIZE > 1) and the same code wraps the model
with ``deepspeed.initialize``.  See docs/training.md for the recipe and the checkpoint layout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from avatar_gen.config import dump_config
from avatar_gen.errors import UserError
from avatar_gen.model.audio_projection import PROJECTION_WEIGHTS, AudioProjection, AudioProjectionConfig
from avatar_gen.model.checkpoint import (
    TRAINING_STATE_FOLDER, TRANSFORMER_FOLDER, check_signature, export_model, finalize_checkpoint,
    load_base_transformer, read_checkpoint_metadata, resolve_checkpoint, staging_folder, step_folder_name)
from avatar_gen.model.denoiser import AvatarDenoiser
from avatar_gen.model.flow import (
    first_frame_token_mask, flow_loss, make_flow_inputs, pack_latents, sample_sigmas, shift_sigmas, token_count_shift,
    unpack_latents)
from avatar_gen.model.lora import LORA_WEIGHTS, attach_lora, make_lora_config
from avatar_gen.training.config import TrainConfig
from avatar_gen.training.dataset import (
    ChunkRecord, LatentAudioDataset, ResumableShardSampler, check_uniform_shapes, collate, scan_chunks, split_clips)
from avatar_gen.utils.io import atomic_path, atomic_write_json, atomic_write_text, read_json
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"
SPLIT_FILE = "data_split.json"
METRICS_FILE = "metrics.jsonl"
RESOLVED_CONFIG = "config.yaml"
DEEPSPEED_TAG = "engine"


class NonFiniteLossError(UserError):
    """The loss stayed NaN/inf for too many micro-batches in a row; a checkpoint of the last good state was saved."""


# ------------------------------------------------------------------------------------------ distributed set-up

@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    use_deepspeed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is True on any rank (every rank must call it)."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(tensor)
        return bool(tensor.item() > 0)


def setup_distributed(config: TrainConfig) -> DistributedContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    wanted = config.acceleration.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserError("acceleration.device is cuda but no CUDA device is visible")
    use_cuda = wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = config.distributed.backend
    if backend == "single" and world_size > 1:
        raise UserError(f"distributed.backend is 'single' but the launcher started {world_size} ranks")
    use_deepspeed = backend == "deepspeed" or (backend == "auto" and world_size > 1)
    if use_deepspeed:
        import deepspeed

        if not use_cuda:
            # On CPU DeepSpeed would JIT-compile its shared-memory all-reduce kernel (a speed-up over gloo) on
            # first use: ~40 s, minutes on a loaded machine, and a killed compile leaves a lock that hangs the
            # next run.  Gloo alone is enough for CPU runs, so mark that op unavailable.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank, device, use_deepspeed)


def deepspeed_settings(config: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed JSON with the batch, accumulation, clipping and precision filled in from our config."""
    path = config.distributed.deepspeed_config
    settings: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise UserError(f"distributed.deepspeed_config not found: {path}")
        try:
            settings = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"cannot parse DeepSpeed config {path}: {exc}") from None
    settings.pop("train_batch_size", None)
    settings["train_micro_batch_size_per_gpu"] = config.data.batch_size
    settings["gradient_accumulation_steps"] = config.optimization.gradient_accumulation_steps
    settings["gradient_clipping"] = config.optimization.max_grad_norm or 0.0
    settings["bf16"] = {"enabled": config.acceleration.mixed_precision == "bf16"}
    settings.pop("fp16", None)
    zero = settings.setdefault("zero_optimization", {"stage": 0})
    if config.distributed.zero_stage is not None:
        zero["stage"] = config.distributed.zero_stage
    settings.setdefault("steps_per_print", 10**9)
    # The client optimizer here is torch's AdamW: no DeepSpeed op to compile.
    settings["zero_allow_untested_optimizer"] = True
    return settings


# ------------------------------------------------------------------------------------------ small helpers

def lr_factor(step: int, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warm-up, then constant / linear / cosine decay."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress_ratio = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress_ratio
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress_ratio))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.jsonl``; a line cut short by a killed run is dropped, not fatal."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All RNG states in types ``torch.load(weights_only=True)`` accepts (numpy's key array becomes a tensor)."""
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [numpy_kind, torch.from_numpy(numpy_keys.astype(np.int64)), int(numpy_pos), int(numpy_has_gauss),
                       float(numpy_gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(item if not isinstance(item, list) else tuple(item) for item in state["python"]))
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = state["numpy"]
    np.random.set_state((numpy_kind, numpy_keys.numpy().astype(np.uint32), numpy_pos, numpy_has_gauss, numpy_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def video_geometry(record: ChunkRecord) -> dict[str, int]:
    """VAE compression factors from a chunk's metadata (LTX: 8 in time, 32 in space)."""
    _, latent_frames, latent_height, _ = record.latent_shape
    temporal = (record.num_frames - 1) // (latent_frames - 1) if latent_frames > 1 else 8
    spatial = record.height // latent_height if record.height and latent_height else 32
    return {"temporal_compression": temporal, "spatial_compression": spatial}


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, float] | None = None


# ------------------------------------------------------------------------------------------ the trainer

class Trainer:
    """Build everything from a :class:`TrainConfig`, then :meth:`train`.

    ``transformer``: use this module instead of loading ``model.pretrained`` (benchmarks of a randomly initialised
    full-size architecture); the checkpoint still records ``model.pretrained`` as its base.
    """

    def __init__(self, config: TrainConfig, transformer: torch.nn.Module | None = None):
        self.config = config
        self.dist = setup_distributed(config)
        self.device = self.dist.device
        if self.device.type == "cpu" and config.acceleration.cpu_threads:
            torch.set_num_threads(config.acceleration.cpu_threads)
        self.output_dir = Path(config.output_dir)
        self.checkpoints_dir = self.output_dir / CHECKPOINTS_FOLDER
        seed_everything(config.optimization.seed + self.dist.rank)
        self.noise_generator = torch.Generator().manual_seed(config.optimization.seed * 1000 + self.dist.rank)
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / RESOLVED_CONFIG, dump_config(config))
        self.resume_from = self._find_resume_checkpoint()
        self._build_data()
        self._build_model(transformer)
        self._build_optimizer()
        self.step = 0
        self.data_epoch, self.data_batches_in_epoch = 0, 0
        self.nonfinite_total, self.nonfinite_in_row = 0, 0
        self.history: list[dict[str, Any]] = []
        # metrics.jsonl is rewritten once per process (dropping rows past a resumed step), then appended to.
        self.metrics_file_synced = False
        self.last_validation: dict[str, float] | None = None
        if self.resume_from is not None:
            self._resume(self.resume_from)
        self.writer = self._tensorboard_writer()

    # -------------------------------------------------------------------------------------- building

    def _find_resume_checkpoint(self) -> Path | None:
        resume = self.config.checkpoints.resume
        if resume is None:
            return None
        if resume == "latest":
            try:
                return resolve_checkpoint(self.checkpoints_dir)
            except UserError:
                log.info("resume: latest requested, no checkpoint in %s yet: starting fresh", self.checkpoints_dir)
                return None
        return resolve_checkpoint(resume)

    def _build_data(self) -> None:
        config = self.config
        records = scan_chunks(config.data.vae_latents, config.data.audio_latents, config.audio.feature_dim,
                              config.data.allow_missing_audio)
        check_uniform_shapes(records, config.data.batch_size)
        split_path = self.output_dir / SPLIT_FILE
        recorded = read_json(split_path)
        if recorded is not None and recorded.get("held_out_fraction") == config.data.held_out_fraction:
            held_out_clips = set(recorded["held_out_clips"])  # keep the run's split even if the data grew
        else:
            _, held_out = split_clips([record.clip_id for record in records], config.data.held_out_fraction)
            held_out_clips = set(held_out)
        self.train_records = [record for record in records if record.clip_id not in held_out_clips]
        self.held_out_records = [record for record in records if record.clip_id in held_out_clips]
        if not self.train_records:
            raise UserError(f"no training chunks left after holding out {len(held_out_clips)} clip(s)")
        if self.dist.is_main:
            atomic_write_json(split_path, {
                "rule": "clip held out when held_out_score(clip_id) < held_out_fraction "
                        "(avatar_gen.training.dataset.held_out_score: SHA-1 of the clip id in [0, 1))",
                "held_out_fraction": config.data.held_out_fraction,
                "held_out_clips": sorted(held_out_clips),
                "train_clips": sorted({record.clip_id for record in self.train_records}),
                "held_out_chunks": [record.key for record in self.held_out_records],
                "train_chunks": [record.key for record in self.train_records],
            })
        self.train_dataset = LatentAudioDataset(self.train_records)
        self.sampler = ResumableShardSampler(len(self.train_dataset), self.dist.rank, self.dist.world_size,
                                             seed=config.optimization.seed, shuffle=config.data.shuffle)
        self.batches_per_epoch = len(self.sampler) // config.data.batch_size
        if self.batches_per_epoch == 0:
            raise UserError(f"{len(self.train_records)} training chunk(s) over {self.dist.world_size} rank(s) do not "
                            f"fill one batch of data.batch_size={config.data.batch_size}")
        first = self.train_records[0]
        self.geometry = video_geometry(first)
        log.info("data: %d training chunks (%d clips), %d held-out chunks (%d clips), latents %s",
                 len(self.train_records), len({r.clip_id for r in self.train_records}), len(self.held_out_records),
                 len(held_out_clips), list(first.latent_shape))

    def _frozen_dtype(self) -> torch.dtype:
        if self.config.lora.train_mode == "full" or self.config.acceleration.mixed_precision == "fp32":
            return torch.float32
        return torch.bfloat16 if self.config.model.dtype == "bfloat16" else torch.float32

    def _build_model(self, transformer: torch.nn.Module | None) -> None:
        config = self.config
        if transformer is None:
            transformer = load_base_transformer(config.model.pretrained, config.model.revision, self._frozen_dtype())
        caption_channels = transformer.config["caption_channels"]
        if config.audio.caption_channels is not None and config.audio.caption_channels != caption_channels:
            raise UserError(f"audio.caption_channels={config.audio.caption_channels} but the transformer's "
                            f"caption_channels is {caption_channels}")
        latent_channels = self.train_records[0].latent_shape[0]
        if transformer.config["in_channels"] != latent_channels * transformer.config["patch_size"] ** 2 * transformer.config["patch_size_t"]:
            raise UserError(f"latents have {latent_channels} channels, the transformer expects "
                            f"in_channels={transformer.config['in_channels']}: latents from another VAE?")
        num_frames = self.train_records[0].num_frames
        if num_frames * config.audio.tokens_per_frame > config.audio.max_tokens:
            raise UserError(f"{num_frames} frames x audio.tokens_per_frame={config.audio.tokens_per_frame} exceeds "
                            f"audio.max_tokens={config.audio.max_tokens}")
        transformer.requires_grad_(False)
        self.lora_config = None
        if config.lora.train_mode == "lora":
            self.lora_config = make_lora_config(config.lora.rank, config.lora.alpha, config.lora.dropout,
                                                config.lora.target_modules)
            adapted = attach_lora(transformer, self.lora_config)
            log.info("LoRA rank %d on %d modules (%s, ...)", config.lora.rank, len(adapted), adapted[0])
        else:
            transformer.requires_grad_(True)
        if config.acceleration.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        projection = AudioProjection(AudioProjectionConfig(
            feature_dim=config.audio.feature_dim, caption_channels=caption_channels,
            tokens_per_frame=config.audio.tokens_per_frame, max_tokens=config.audio.max_tokens,
            hidden_dim=config.audio.hidden_dim, position_embedding=config.audio.position_embedding,
            input_norm=config.audio.input_norm))
        self.model = AvatarDenoiser(transformer, projection, alignment=config.audio.alignment,
                                    local_margin_frames=config.audio.local_margin_frames, **self.geometry)
        self.model.to(self.device)
        self.model.train()
        self.trainable = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        count = sum(parameter.numel() for parameter in self.trainable)
        log.info("model: %s training, %.2fM trainable parameters, alignment %s",
                 config.lora.train_mode, count / 1e6, config.audio.alignment)

    def _build_optimizer(self) -> None:
        optimization = self.config.optimization
        self.optimizer = torch.optim.AdamW(self.trainable, lr=optimization.learning_rate, betas=optimization.betas,
                                           eps=optimization.eps, weight_decay=optimization.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(
            step, optimization.warmup_steps, optimization.max_steps, optimization.schedule, optimization.min_lr_ratio))
        self.engine = None
        if self.dist.use_deepspeed:
            import deepspeed

            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler,
                config=deepspeed_settings(self.config))
            self.model = self.engine.module

    def _tensorboard_writer(self):
        if not (self.dist.is_main and self.config.logging.tensorboard):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.step if self.step else None)

    # -------------------------------------------------------------------------------------- data

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Endless batches; ``data_epoch``/``data_batches_in_epoch`` always say what was consumed."""
        while True:
            self.sampler.set_epoch(self.data_epoch)
            self.sampler.set_position(self.data_batches_in_epoch * self.config.data.batch_size)
            # Its own generator: creating a loader iterator draws a worker seed, which must not consume the
            # global RNG (a resumed run creates its iterator at another moment than an uninterrupted one).
            loader_generator = torch.Generator().manual_seed(self.config.optimization.seed + 7 * self.data_epoch)
            loader = DataLoader(self.train_dataset, batch_size=self.config.data.batch_size, sampler=self.sampler,
                                num_workers=self.config.data.num_workers, collate_fn=collate, drop_last=True,
                                pin_memory=self.device.type == "cuda", generator=loader_generator)
            for batch in loader:
                self.data_batches_in_epoch += 1
                yield batch
            self.data_epoch += 1
            self.data_batches_in_epoch = 0

    # -------------------------------------------------------------------------------------- one step

    def _autocast(self):
        if self.engine is None and self.config.acceleration.mixed_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _shift(self, num_tokens: int) -> float:
        flow = self.config.flow
        if flow.shift == "auto":
            return token_count_shift(num_tokens, flow.base_seq_len, flow.max_seq_len, flow.base_shift, flow.max_shift)
        return float(flow.shift)

    def _token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        transformer_config = self.model.transformer.config
        _, _, frames, height, width = latents.shape
        return (frames // transformer_config["patch_size_t"], height // transformer_config["patch_size"],
                width // transformer_config["patch_size"])

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        transformer_config = self.model.transformer.config
        return pack_latents(latents, transformer_config["patch_size"], transformer_config["patch_size_t"])

    def flow_batch_loss(self, model: torch.nn.Module, latents: torch.Tensor, audio: torch.Tensor, frame_rate: float,
                        generator: torch.Generator, condition_probability: float,
                        per_sample: bool = False) -> torch.Tensor:
        """Rectified-flow loss of normalised ``latents`` [B, C, F', h, w] given ``audio`` [B, F, D]; all randomness
        (sigma, noise, first-frame conditioning) comes from ``generator``."""
        batch_size = latents.shape[0]
        frames, height, width = self._token_grid(latents)
        clean = self._pack(latents.to(self.device))
        sigmas = sample_sigmas(batch_size, self._shift(clean.shape[1]), self.config.flow.logit_mean,
                               self.config.flow.logit_std, generator)
        noise = torch.randn(clean.shape, generator=generator)
        conditioned = torch.rand(batch_size, generator=generator) < condition_probability
        condition_mask = first_frame_token_mask(batch_size, frames, height * width, conditioned)
        inputs = make_flow_inputs(clean, noise.to(self.device), sigmas.to(self.device), condition_mask.to(self.device))
        with self._autocast():
            prediction = model(inputs.noisy, audio.to(self.device), inputs.timestep, frames, height, width, frame_rate)
        return flow_loss(prediction, inputs, per_sample=per_sample)

    def _frame_rate(self, batch: dict[str, Any]) -> float:
        return self.train_records[int(batch["index"][0])].fps

    def micro_step_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        forward = self.engine if self.engine is not None else self.model
        return self.flow_batch_loss(forward, batch["latents"], batch["audio"], self._frame_rate(batch),
                                    self.noise_generator, self.config.conditioning.first_frame_probability)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)  # DeepSpeed divides by the accumulation steps itself
        else:
            (loss / self.config.optimization.gradient_accumulation_steps).backward()

    def _apply_gradients(self) -> float | None:
        """Clip and step; returns the gradient norm, or None when it was not finite (update skipped)."""
        if self.engine is not None:
            # engine.step() was called after each micro-batch; at the accumulation boundary it updated.
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        max_norm = self.config.optimization.max_grad_norm
        norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm if max_norm else float("inf")))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def optimizer_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, float] | None:
        """Consume micro-batches until ``gradient_accumulation_steps`` finite ones were back-propagated, update.

        A NaN/inf loss skips its micro-batch (on every rank) and is counted; ``max_consecutive_nonfinite`` in a row
        stop the run.  Returns the step's metrics, or None when a non-finite gradient norm skipped the update.
        """
        accumulation = self.config.optimization.gradient_accumulation_steps
        losses, samples = [], 0
        while len(losses) < accumulation:
            batch = next(batches)
            loss = self.micro_step_loss(batch)
            if self.dist.any_rank(not bool(torch.isfinite(loss.detach()).item())):
                self._count_nonfinite("loss")
                continue
            self._backward(loss)
            if self.engine is not None:
                self.engine.step()
            losses.append(float(loss.detach()))
            samples += batch["latents"].shape[0]
        lr = self.optimizer.param_groups[0]["lr"]
        norm = self._apply_gradients()
        if norm is None:
            self._count_nonfinite("gradient norm")
            return None
        self.nonfinite_in_row = 0
        self.step += 1
        return {"loss": sum(losses) / len(losses), "lr": lr, "grad_norm": norm, "samples": samples * self.dist.world_size}

    def _count_nonfinite(self, what: str) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        log.warning("non-finite %s at step %d: skipped (%d in a row, %d in total)", what, self.step,
                    self.nonfinite_in_row, self.nonfinite_total)
        limit = self.config.optimization.max_consecutive_nonfinite
        if self.nonfinite_in_row >= limit:
            path = self.save_checkpoint()
            raise NonFiniteLossError(
                f"the {what} was NaN/inf {self.nonfinite_in_row} times in a row at step {self.step} "
                f"(optimization.max_consecutive_nonfinite={limit}); weights of the last good step saved in {path}. "
                f"Check the data (NaN latents/features) or lower optimization.learning_rate")

    # -------------------------------------------------------------------------------------- the loop

    def train(self, stop_after_step: int | None = None) -> TrainResult:
        """Run to ``optimization.max_steps``; ``stop_after_step`` ends early (as if killed after that step's
        checkpoint) without changing the LR schedule, which depends on ``max_steps``."""
        config = self.config
        max_steps = config.optimization.max_steps
        last_step = min(max_steps, stop_after_step) if stop_after_step is not None else max_steps
        batches = self._batches()
        last_checkpoint = None
        bar = progress(total=max_steps, desc="training", unit="step")
        bar.update(self.step)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        while self.step < last_step:
            started = time.perf_counter()
            metrics = self.optimizer_step(batches)
            if metrics is None:
                continue
            elapsed = time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if self.step % config.logging.log_every_n_steps == 0 or self.step == max_steps:
                self._log_step(metrics, elapsed)
            if config.validation.every_n_steps and self.step % config.validation.every_n_steps == 0:
                self.validate()
            if self.step % config.checkpoints.every_n_steps == 0 or self.step in (max_steps, last_step):
                last_checkpoint = self.save_checkpoint()
        bar.close()
        if last_checkpoint is None and self.step == max_steps:
            last_checkpoint = resolve_checkpoint(self.checkpoints_dir) if self.checkpoints_dir.exists() else None
        if self.writer is not None:
            self.writer.flush()
        return TrainResult(step=self.step, checkpoint=last_checkpoint, history=self.history,
                           validation=self.last_validation)

    def _log_step(self, metrics: dict[str, float], elapsed: float) -> None:
        row = {"step": self.step, "loss": metrics["loss"], "lr": metrics["lr"], "grad_norm": metrics["grad_norm"],
               "step_time_s": elapsed, "samples_per_s": metrics["samples"] / elapsed if elapsed > 0 else 0.0,
               "peak_memory_mb": peak_memory_mb(self.device), "nonfinite_skipped": self.nonfinite_total}
        self._record(row, prefix="train")
        log.info("step %d: loss %.4f lr %.2e grad-norm %.3f %.2fs/step", self.step, row["loss"], row["lr"],
                 row["grad_norm"], elapsed)

    def _record(self, row: dict[str, Any], prefix: str) -> None:
        """Append to the in-memory history, TensorBoard and ``metrics.jsonl`` (rank 0)."""
        row = {key: (value if not isinstance(value, float) or math.isfinite(value) else None) for key, value in row.items()}
        row["kind"] = prefix
        self.history.append(row)
        if not self.dist.is_main:
            return
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, self.step)
        if self.metrics_file_synced:
            with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        else:
            atomic_write_text(self.output_dir / METRICS_FILE, "".join(json.dumps(item) + "\n" for item in self.history))
            self.metrics_file_synced = True

    # -------------------------------------------------------------------------------------- validation

    def validate(self) -> dict[str, float]:
        """Audio-conditioning gain on held-out (and optionally training) chunks; rank 0 computes, others wait."""
        results: dict[str, float] = {}
        if self.dist.is_main:
            validation = self.config.validation
            self.model.eval()
            for name, records, count in (("val", self.held_out_records, validation.held_out_chunks),
                                         ("train_eval", self.train_records, validation.train_chunks)):
                if count and len(records) >= 2:
                    scores = self.audio_gain(records[:count])
                    results.update({f"{name}_{key}": value for key, value in scores.items()})
            if validation.sample_videos and self.held_out_records:
                self.write_sample_videos(self.held_out_records[:validation.sample_chunks])
            self.model.train()
            if results:
                self._record(dict(results, step=self.step), prefix="validation")
                log.info("validation step %d: %s", self.step,
                         ", ".join(f"{key} {value:.4f}" for key, value in results.items()))
        self.dist.barrier()
        self.last_validation = results or self.last_validation
        return results

    @torch.no_grad()
    def audio_gain(self, records: list[ChunkRecord]) -> dict[str, float]:
        """Loss with the true audio vs with another chunk's audio at the same noise and sigma draws.

        ``audio_gain`` = mean shuffled loss / mean true loss (> 1: the model uses the speech), averaged over
        ``validation.num_draws`` draws; ``audio_gain_std`` is its spread over the draws.  The first latent frame is
        always given (as at inference).  Chunks are paired with the next chunk of the same frame count.
        """
        dataset = LatentAudioDataset(records)
        items = [dataset[index] for index in range(len(dataset))]
        partner = {}
        for index, item in enumerate(items):
            same = [other for other in range(len(items)) if other != index
                    and items[other]["audio"].shape == item["audio"].shape
                    and items[other]["latents"].shape == item["latents"].shape]
            if same:
                partner[index] = min(same, key=lambda other: (other - index) % len(items))
        if not partner:
            return {}
        gains, true_means, shuffled_means = [], [], []
        for draw in range(self.config.validation.num_draws):
            true_losses, shuffled_losses = [], []
            for index, other in partner.items():
                latents, record = items[index]["latents"][None], records[index]
                for audio, bucket in ((items[index]["audio"], true_losses), (items[other]["audio"], shuffled_losses)):
                    generator = torch.Generator().manual_seed(self.config.validation.seed + 7919 * draw + index)
                    loss = self.flow_batch_loss(self.model, latents, audio[None], record.fps, generator, 1.0)
                    bucket.append(float(loss))
            true_means.append(float(np.mean(true_losses)))
            shuffled_means.append(float(np.mean(shuffled_losses)))
            gains.append(shuffled_means[-1] / max(true_means[-1], 1e-12))
        return {"loss_true": float(np.mean(true_means)), "loss_shuffled": float(np.mean(shuffled_means)),
                "audio_gain": float(np.mean(gains)), "audio_gain_std": float(np.std(gains)), "chunks": float(len(partner))}

    @torch.no_grad()
    def sample_latents(self, record: ChunkRecord, audio: torch.Tensor, num_steps: int, seed: int = 0) -> torch.Tensor:
        """Generate normalised latents [C, F', h, w] for ``record``'s first frame and ``audio`` [F, D] (Euler, i2v)."""
        item = LatentAudioDataset([record])[0]
        latents = item["latents"][None]
        frames, height, width = self._token_grid(latents)
        clean = self._pack(latents.to(self.device))
        condition = first_frame_token_mask(1, frames, height * width, torch.ones(1, dtype=torch.bool)).to(self.device)
        generator = torch.Generator().manual_seed(seed)
        current = torch.randn(clean.shape, generator=generator).to(self.device)
        sigmas = shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1), self._shift(clean.shape[1]))
        keep = condition[..., None]
        for sigma, next_sigma in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            current = keep * clean + (1 - keep) * current
            timestep = sigma * 1000.0 * (1 - condition)
            with self._autocast():
                velocity = self.model(current, audio[None].to(self.device), timestep, frames, height, width, record.fps)
            current = current + (next_sigma - sigma) * velocity.float()
        current = keep * clean + (1 - keep) * current
        transformer_config = self.model.transformer.config
        return unpack_latents(current, frames, height, width, transformer_config["patch_size"],
                              transformer_config["patch_size_t"])[0].cpu()

    def write_sample_videos(self, records: list[ChunkRecord]) -> list[Path]:
        """Decode sampled videos of held-out chunks to ``samples/step_XXXXXX/<key>.mp4`` with their speech."""
        from avatar_gen.latents import decode_latents, load_vae
        from avatar_gen.media import write_video

        if not hasattr(self, "_sample_vae"):
            self._sample_vae = load_vae(self.config.model.pretrained, self.config.model.revision, dtype="fp32",
                                        device=self.device).vae
        folder = self.output_dir / "samples" / step_folder_name(self.step)
        written = []
        for record in records:
            audio = torch.from_numpy(np.load(record.audio_path).astype(np.float32))
            generated = self.sample_latents(record, audio, self.config.validation.sample_steps)
            raw = generated * torch.tensor(record.vae["latents_std"]).view(-1, 1, 1, 1) \
                / float(record.vae.get("scaling_factor", 1.0)) + torch.tensor(record.vae["latents_mean"]).view(-1, 1, 1, 1)
            frames = decode_latents(self._sample_vae, raw.to(self.device))
            wav = Path(self.config.data.vae_latents).parent / "audio_wav" / f"{record.key}.wav"
            written.append(write_video(folder / f"{record.key}.mp4", frames, record.fps,
                                       audio=wav if wav.is_file() else None))
        log.info("sample videos: %s", folder)
        return written

    # -------------------------------------------------------------------------------------- checkpoints

    def checkpoint_metadata(self) -> dict[str, Any]:
        first = self.train_records[0]
        lora = self.config.lora
        return {
            "step": self.step,
            "base_model": {"pretrained": self.config.model.pretrained, "revision": self.config.model.revision},
            "lora": None if self.lora_config is None else {
                "rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": lora.target_modules},
            "audio_encoder": first.audio_encoder,
            "video": {"height": first.height, "width": first.width, "num_frames": first.num_frames, "fps": first.fps},
            "latents": {"latent_shape": list(first.latent_shape), "vae": first.vae},
            "alignment": self.config.audio.alignment,
            "local_margin_frames": self.config.audio.local_margin_frames,
            **self.geometry,
        }

    def save_checkpoint(self) -> Path:
        """Write checkpoint ``step`` atomically (every rank calls it); returns its final folder."""
        staging = self.checkpoints_dir / f".tmp-{step_folder_name(self.step)}"
        if self.dist.is_main:
            staging = staging_folder(self.checkpoints_dir, self.step)
            (staging / TRAINING_STATE_FOLDER).mkdir()
        self.dist.barrier()
        state_dir = staging / TRAINING_STATE_FOLDER
        if self.engine is not None:
            self.engine.save_checkpoint(str(state_dir), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True)
        elif self.dist.is_main:
            with atomic_path(state_dir / "optimizer.pt") as tmp:
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, tmp)
        with atomic_path(state_dir / f"rank_{self.dist.rank:03d}.pt") as tmp:
            torch.save({"rng": rng_state(), "noise_generator": self.noise_generator.get_state()}, tmp)
        if self.dist.is_main:
            atomic_write_json(state_dir / "trainer.json", {
                "step": self.step, "world_size": self.dist.world_size, "data_epoch": self.data_epoch,
                "data_batches_in_epoch": self.data_batches_in_epoch, "nonfinite_total": self.nonfinite_total,
                "deepspeed": self.engine is not None, "deepspeed_tag": DEEPSPEED_TAG if self.engine else None})
            export_model(staging, self.model.transformer, self.model.audio_projection, self.checkpoint_metadata(),
                         self.lora_config)
        self.dist.barrier()
        final = self.checkpoints_dir / step_folder_name(self.step)
        if self.dist.is_main:
            final = finalize_checkpoint(self.checkpoints_dir, staging, self.step, self.config.checkpoints.keep_last)
        self.dist.barrier()
        return final

    def _resume(self, folder: Path) -> None:
        metadata = read_checkpoint_metadata(folder)
        state_dir = folder / TRAINING_STATE_FOLDER
        trainer_state = read_json(state_dir / "trainer.json")
        if trainer_state is None:
            raise UserError(f"{folder} has no {TRAINING_STATE_FOLDER}/trainer.json: not a resumable training checkpoint")
        where = f"checkpoint {folder}"
        mode = "lora" if self.lora_config is not None else "full"
        if metadata.get("transformer_training") != mode:
            raise UserError(f"{where} trained '{metadata.get('transformer_training')}', this config trains '{mode}'")
        check_signature(metadata.get("transformer_config", {}), self.model.transformer, where)
        if metadata.get("audio_projection") != self.model.audio_projection.config.model_dump(mode="json"):
            raise UserError(f"{where}: its audio projection {metadata.get('audio_projection')} differs from this "
                            f"config's {self.model.audio_projection.config.model_dump(mode='json')}")
        if self.engine is not None:
            if not trainer_state.get("deepspeed"):
                raise UserError(f"{where} was written by a single-process run; resume it without DeepSpeed")
            loaded, _ = self.engine.load_checkpoint(str(state_dir), tag=DEEPSPEED_TAG, load_module_strict=False)
            if loaded is None:
                raise UserError(f"{where}: DeepSpeed could not load {state_dir}")
        else:
            if trainer_state.get("deepspeed"):
                raise UserError(f"{where} was written by DeepSpeed; resume it under the deepspeed launcher")
            self._load_trainable_weights(folder)
            saved = torch.load(state_dir / "optimizer.pt", map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
        self.step = int(trainer_state["step"])
        self.nonfinite_total = int(trainer_state.get("nonfinite_total", 0))
        rank_file = state_dir / f"rank_{self.dist.rank:03d}.pt"
        if trainer_state.get("world_size") == self.dist.world_size and rank_file.is_file():
            self.data_epoch = int(trainer_state["data_epoch"])
            self.data_batches_in_epoch = int(trainer_state["data_batches_in_epoch"])
            rank_state = torch.load(rank_file, weights_only=True)
            set_rng_state(rank_state["rng"])
            self.noise_generator.set_state(rank_state["noise_generator"])
        else:
            self.data_epoch, self.data_batches_in_epoch = int(trainer_state["data_epoch"]) + 1, 0
            log.warning("resuming with %d ranks a checkpoint of %s ranks: data restarts at epoch %d, fresh RNG",
                        self.dist.world_size, trainer_state.get("world_size"), self.data_epoch)
        self.history = [row for row in read_metrics(self.output_dir / METRICS_FILE) if row.get("step", 0) <= self.step]
        log.info("resumed from %s at step %d (epoch %d, batch %d)", folder, self.step, self.data_epoch,
                 self.data_batches_in_epoch)

    def _load_trainable_weights(self, folder: Path) -> None:
        """Copy the checkpoint's exported weights (fp32) into the live model: exact for LoRA and full training."""
        transformer = self.model.transformer
        if self.lora_config is not None:
            from peft.utils import set_peft_model_state_dict

            prefix = "transformer."
            state = {key[len(prefix):]: value for key, value in load_file(str(folder / LORA_WEIGHTS)).items()
                     if key.startswith(prefix)}
            result = set_peft_model_state_dict(transformer, state, adapter_name="default")
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise UserError(f"{folder}: LoRA keys that do not fit this model: {unexpected[:3]}")
        else:
            saved = load_base_transformer(folder / TRANSFORMER_FOLDER, None, torch.float32)
            transformer.load_state_dict(saved.state_dict())
        projection_state = load_file(str(folder / PROJECTION_WEIGHTS))
        self.model.audio_projection.load_state_dict(projection_state)


def train(config: TrainConfig) -> TrainResult:
    """Build a :class:`Trainer` and run it to ``optimization.max_steps``."""
    return Trainer(config).train()
