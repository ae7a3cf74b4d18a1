"""Where one process and N DeepSpeed ranks differ: the set-up, and a stepper that does backward and update.

The training loop calls a :class:`Stepper` and never asks which engine runs it; the launcher decides (see
docs/training.md).  Per-rank RNG state lives here too: every rank seeds, saves and restores its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from avatar_gen.errors import UserError
from avatar_gen.training.config import TrainConfig
from avatar_gen.utils.datafiles import load_tensor_file
from avatar_gen.utils.io import atomic_path

DEEPSPEED_TAG = "engine"
# ZeRO stage 3 partitions the parameters themselves; exporting and validating on rank 0 need them whole.
ZERO_STAGE_SHARDING_WEIGHTS = 3
OPTIMIZER_FILE = "optimizer.pt"


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
        deepspeed_settings(config)  # a bad DeepSpeed config fails now, before any model is loaded
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
    if int(zero.get("stage", 0)) >= ZERO_STAGE_SHARDING_WEIGHTS:
        raise UserError(f"DeepSpeed ZeRO stage {zero['stage']} is not supported (distributed.zero_stage, or "
                        f"zero_optimization.stage in {path}): it shards the weights, and rank 0 exports checkpoints "
                        f"and validates from whole weights; use stage 2 (configs/deepspeed/zero2.json)")
    settings.setdefault("steps_per_print", 10**9)
    # The client optimizer here is torch's AdamW: no DeepSpeed op to compile.
    settings["zero_allow_untested_optimizer"] = True
    return settings


# ------------------------------------------------------------------------------------------ per-rank RNG state

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


# ------------------------------------------------------------------------------------------ the stepper

class Stepper(Protocol):
    """Backward, update and optimizer state for one kind of run; the training loop sees only this."""

    forward: torch.nn.Module  # what the training forward calls
    optimizer: torch.optim.Optimizer

    def autocast(self) -> contextlib.AbstractContextManager: ...

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate one micro-batch's loss (scaled for gradient accumulation)."""

    def apply_gradients(self) -> float | None:
        """Clip and update after the last micro-batch; the gradient norm, or None when it was not finite."""

    def save(self, state_dir: Path, is_main: bool) -> dict[str, Any]:
        """Write the optimizer state into ``state_dir`` (every rank calls it); what ``trainer.json`` records."""

    def load(self, folder: Path, state_dir: Path, recorded: dict[str, Any]) -> None:
        """Restore from checkpoint ``folder`` whose ``trainer.json`` said ``recorded``."""


class PlainStepper:
    """One process: torch autocast, clipping and the optimizer; the weights are read back from the export."""

    def __init__(self, model: torch.nn.Module, trainable: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 scheduler: Any, config: TrainConfig, device: torch.device, load_weights: Callable[[Path], None]):
        self.forward, self.trainable, self.optimizer, self.scheduler = model, trainable, optimizer, scheduler
        self.accumulation = config.optimization.gradient_accumulation_steps
        self.max_grad_norm = config.optimization.max_grad_norm
        self.device = device
        self.bf16 = config.acceleration.mixed_precision == "bf16"
        self.load_weights = load_weights

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accumulation).backward()

    def apply_gradients(self) -> float | None:
        norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm or float("inf")))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def save(self, state_dir: Path, is_main: bool) -> dict[str, Any]:
        if is_main:
            with atomic_path(state_dir / OPTIMIZER_FILE) as tmp:
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, tmp)
        return {"deepspeed": False, "deepspeed_tag": None}

    def load(self, folder: Path, state_dir: Path, recorded: dict[str, Any]) -> None:
        if recorded.get("deepspeed"):
            raise UserError(f"checkpoint {folder} was written by DeepSpeed; resume it under the deepspeed launcher")
        self.load_weights(folder)
        saved = load_tensor_file(state_dir / OPTIMIZER_FILE, "optimizer state", map_location=self.device)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])


class DeepSpeedStepper:
    """N ranks under ``deepspeed.initialize``: the engine scales, accumulates, clips, casts and saves."""

    def __init__(self, engine: Any, optimizer: Any):
        self.engine, self.forward, self.optimizer = engine, engine, optimizer

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the engine holds the model in bf16 itself

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # DeepSpeed divides by the accumulation steps itself
        self.engine.step()  # a no-op except at the accumulation boundary, where it updates

    def apply_gradients(self) -> float | None:
        norm = self.engine.get_global_grad_norm()  # the update happened in the last backward()
        return float(norm) if norm is not None else float("nan")

    def save(self, state_dir: Path, is_main: bool) -> dict[str, Any]:
        self.engine.save_checkpoint(str(state_dir), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True)
        return {"deepspeed": True, "deepspeed_tag": DEEPSPEED_TAG}

    def load(self, folder: Path, state_dir: Path, recorded: dict[str, Any]) -> None:
        if not recorded.get("deepspeed"):
            raise UserError(f"checkpoint {folder} was written by a single-process run; resume it without DeepSpeed")
        loaded, _ = self.engine.load_checkpoint(str(state_dir), tag=DEEPSPEED_TAG, load_module_strict=False)
        if loaded is None:
            raise UserError(f"checkpoint {folder}: DeepSpeed could not load {state_dir}")


def make_stepper(config: TrainConfig, dist: DistributedContext, model: torch.nn.Module,
                 trainable: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, scheduler: Any,
                 load_weights: Callable[[Path], None]) -> tuple[Stepper, torch.nn.Module]:
    """The stepper for this run and the model to evaluate and export (DeepSpeed's engine wraps ``model``)."""
    if not dist.use_deepspeed:
        return PlainStepper(model, trainable, optimizer, scheduler, config, dist.device, load_weights), model
    import deepspeed

    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=deepspeed_settings(config))
    return DeepSpeedStepper(engine, optimizer), engine.module
