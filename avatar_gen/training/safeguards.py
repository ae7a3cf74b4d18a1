"""Guards around a training run, kept out of the loop: one run per folder, the config's optimizer settings after a
resume, and no checkpoint of weights that are no longer numbers.

- :func:`lock_run_folder`: a second training on the same ``output_dir`` stops at once with one line (it used to
  race the first one's temporary files until one of them died);
- :func:`apply_optimizer_settings`: loading an optimizer's state brings back the saved run's learning rate, betas,
  epsilon and weight decay; this puts the config's values back (and says which changed), so that what runs is what
  ``config.yaml`` records;
- :func:`nonfinite_weights`: the names of trainable tensors holding NaN or infinity, which must never be saved (a
  diverged run's "last good" checkpoint used to hold them, and inference from it wrote an all-black video).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Iterable
from typing import IO, Any

import torch

from avatar_gen.model.checkpoint import nonfinite_tensors
from avatar_gen.utils.io import acquire_exclusive_lock

RUN_LOCK_FILE = ".training.lock"


def lock_run_folder(output_dir: str | os.PathLike) -> IO:
    """Hold the run folder's lock for as long as the returned handle is open (the process's life, usually);
    UserError when another training holds it."""
    output_dir = Path(output_dir)
    return acquire_exclusive_lock(output_dir / RUN_LOCK_FILE,
                                  f"another training is running in {output_dir}: wait for it, stop it, or choose "
                                  f"another output_dir")


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, scheduler: Any, learning_rate: float,
                             betas: tuple[float, float], eps: float, weight_decay: float) -> list[str]:
    """Put this run's settings into an optimizer (and its ``LambdaLR`` scheduler) whose state was just loaded from a
    checkpoint; returns what changed, as ``"learning_rate 0.002 -> 0.0001"`` lines (empty when nothing did).

    The learning rate keeps its place in the schedule: the step's rate becomes the new peak rate times the schedule's
    factor at the resumed step (the schedule itself is rebuilt from the config, never loaded).
    """
    wanted = {"betas": tuple(float(beta) for beta in betas), "eps": float(eps), "weight_decay": float(weight_decay)}
    changes: dict[str, str] = {}
    base_lrs = getattr(scheduler, "base_lrs", None)
    for index, group in enumerate(optimizer.param_groups):
        old_peak = float(base_lrs[index] if base_lrs is not None else group.get("initial_lr", group["lr"]))
        if not math.isclose(old_peak, learning_rate, rel_tol=1e-9, abs_tol=0.0):
            changes["learning_rate"] = f"learning_rate {old_peak:g} -> {learning_rate:g}"
        factor = group["lr"] / old_peak if old_peak else 1.0
        group["lr"] = learning_rate * factor
        group["initial_lr"] = learning_rate
        if base_lrs is not None:
            base_lrs[index] = learning_rate
        for key, value in wanted.items():
            old = tuple(group[key]) if key == "betas" else group[key]
            if old != value:
                changes[key] = f"{key} {old} -> {value}"
            group[key] = value
    if scheduler is not None and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    return list(changes.values())


def nonfinite_weights(named_parameters: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the trainable tensors holding NaN or infinity (frozen ones are the pretrained base's)."""
    return nonfinite_tensors((name, parameter.detach()) for name, parameter in named_parameters
                             if parameter.requires_grad)
