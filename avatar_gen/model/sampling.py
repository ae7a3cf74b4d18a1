"""Sampling the rectified flow: the schedule of sigmas, and the Euler loop with given (clean) tokens.

Inference (:mod:`avatar_gen.inference.sampler`) and the trainer's preview videos
(:mod:`avatar_gen.training.validation`) both sample with these two functions, so that a preview shows what inference
gives.  The schedule is the one diffusers' ``LTXImageToVideoPipeline`` hands its ``FlowMatchEulerDiscreteScheduler``
(``steps`` sigmas from 1 to 1/steps, shifted for the video's size, stretched to ``shift_terminal``), computed here
from the scheduler's config alone, in the same float32 arithmetic, so it equals the scheduler's bit for bit
(``tests/test_sampling.py``).  Why the project runs its own loop instead of the pipeline's: docs/inference.md
("Sampling").  Torch and numpy only: ``python -m bench.gpu`` imports this on a machine without the media stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avatar_gen.model.flow import token_count_mu

# Scheduler options LTX-Video does not use and this loop does not implement: refused rather than ignored.
UNSUPPORTED_SCHEDULER_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                                 "stochastic_sampling")
# diffusers' FlowMatchEulerDiscreteScheduler defaults, for a scheduler config that leaves a key out.
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, "base_shift": 0.5, "max_shift": 1.15,
    "base_image_seq_len": 256, "max_image_seq_len": 4096, "shift_terminal": None, "time_shift_type": "exponential",
}


@dataclass(frozen=True)
class SigmaSchedule:
    """What a sampling run steps through.

    sigmas: float32 [steps + 1], decreasing, the last exactly 0 (clean).  timesteps: float32 [steps], the
    transformer's timestep input at each step (``sigma * num_train_timesteps``, or a fixed schedule's own values).
    """

    sigmas: torch.Tensor
    timesteps: torch.Tensor

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def check_scheduler_config(scheduler_config: Mapping[str, Any]) -> None:
    """ValueError naming the scheduler options this sampler does not implement (none of them is LTX-Video's)."""
    unsupported = [name for name in UNSUPPORTED_SCHEDULER_OPTIONS if scheduler_config.get(name)]
    if unsupported:
        raise ValueError(f"the scheduler sets {', '.join(unsupported)}, which the sampler does not implement")
    if scheduler_config.get("time_shift_type", "exponential") not in ("exponential", "linear"):
        raise ValueError(f"unknown time_shift_type {scheduler_config.get('time_shift_type')!r}")


def sigma_schedule(scheduler_config: Mapping[str, Any], video_sequence_length: int, num_steps: int | None = None,
                   fixed_timesteps: Sequence[float] | None = None) -> SigmaSchedule:
    """The schedule of one sampling run: the one home of this computation (inference and previews call it).

    ``scheduler_config``: a ``FlowMatchEulerDiscreteScheduler`` config (``scheduler.config`` or the base model's
    ``scheduler/scheduler_config.json``).  ``video_sequence_length``: latent frames x latent height x latent width
    of the video, counted before the transformer's patching, as diffusers' pipeline counts it (the dynamic shift
    grows with it).  Regular schedule (``num_steps`` >= 2): ``linspace(1, 1/steps, steps)``, shifted (dynamic
    shift ``mu`` from the count, or the config's fixed ``shift``), stretched so that the last sigma is
    ``shift_terminal`` when the config sets one, then 0 appended.  ``fixed_timesteps`` (decreasing values in
    (0, num_train_timesteps], e.g. a distilled model's) are used as given: sigma = timestep / num_train_timesteps,
    no shift.  ValueError for what cannot be sampled.
    """
    config = {**SCHEDULER_DEFAULTS, **dict(scheduler_config)}
    check_scheduler_config(config)
    num_train = int(config["num_train_timesteps"])
    if fixed_timesteps is not None:
        timesteps = torch.tensor([float(value) for value in fixed_timesteps], dtype=torch.float32)
        if not len(timesteps) or not bool(((timesteps > 0) & (timesteps <= num_train)).all()) \
                or bool((timesteps[1:] >= timesteps[:-1]).any()):
            raise ValueError(f"fixed timesteps must be decreasing values in (0, {num_train}], got {timesteps.tolist()}")
        return SigmaSchedule(sigmas=torch.cat([timesteps / num_train, torch.zeros(1)]), timesteps=timesteps)
    if num_steps is None or num_steps < 2:
        # one step is the single sigma 1.0, which the shift_terminal stretch divides by zero
        raise ValueError(f"a regular schedule needs at least 2 steps, got {num_steps}")
    # float32 numpy from here, as the scheduler computes, so that both give the same bits
    sigmas = np.linspace(1.0, 1.0 / num_steps, num_steps).astype(np.float32)
    if config["use_dynamic_shifting"]:
        mu = token_count_mu(video_sequence_length, config["base_image_seq_len"], config["max_image_seq_len"],
                            config["base_shift"], config["max_shift"])
        scale = math.exp(mu) if config["time_shift_type"] == "exponential" else mu
        sigmas = scale / (scale + (1.0 / sigmas - 1.0))
    else:
        shift = float(config["shift"])
        sigmas = shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
    if config["shift_terminal"]:
        # stretch 1 - sigma so that the last sigma lands on shift_terminal (LTX-Video's rf scheduler does the same)
        one_minus = 1.0 - sigmas
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 is reported below
            sigmas = 1.0 - one_minus / (one_minus[-1] / (1.0 - config["shift_terminal"]))
    sigmas = torch.from_numpy(np.ascontiguousarray(sigmas)).to(torch.float32)
    if not bool(torch.isfinite(sigmas).all()):
        # e.g. a dynamic shift extrapolated far beyond max_image_seq_len: every sigma rounds to 1, the stretch is 0/0
        raise ValueError(f"the {num_steps}-step schedule for {video_sequence_length} latent positions is not finite "
                         f"(the scheduler's shift for that many positions pushes every sigma to 1)")
    return SigmaSchedule(sigmas=torch.cat([sigmas, torch.zeros(1)]), timesteps=sigmas * num_train)


def check_start_sigma(start_sigma: Any) -> float:
    """A start noise level in (0, 1] (1 = pure noise) as a float; ValueError otherwise (also for NaN and text)."""
    try:
        value = float(start_sigma)
    except (TypeError, ValueError):
        value = float("nan")  # refused below
    if not 0.0 < value <= 1.0:
        raise ValueError(f"start_sigma must be a noise level in (0, 1] (1 = from pure noise), got {start_sigma!r}")
    return value


def start_at(schedule: SigmaSchedule, start_sigma: float) -> SigmaSchedule:
    """The tail of ``schedule`` whose noise levels are at most ``start_sigma`` (in (0, 1]; 1 keeps it whole): a run
    that starts from a clean video noised to the first kept sigma instead of from pure noise (SDEdit, Meng et al.
    2022; diffusers' ``strength`` cuts its schedule the same way, counted in steps instead of noise).  ValueError
    when no step is left."""
    start_sigma = check_start_sigma(start_sigma)
    first = int((schedule.sigmas[:-1] > start_sigma).sum())  # the sigmas decrease: skip those above the start
    if first >= schedule.num_steps:
        lowest = float(schedule.sigmas[-2])
        raise ValueError(f"no step of the {schedule.num_steps}-step schedule starts at or below noise level "
                         f"{start_sigma:g} (its lowest is {lowest:.3g})")
    return SigmaSchedule(sigmas=schedule.sigmas[first:], timesteps=schedule.timesteps[first:])


Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``velocity(latents float32 [B, N, C], timestep float32 [B, N]) -> [B, N, C]``: the model with its other inputs
bound (caption tokens, masks, grid, frame rate; guidance)."""


def euler_sample(velocity: Velocity, noise: torch.Tensor, schedule: SigmaSchedule, clean: torch.Tensor | None = None,
                 condition_mask: torch.Tensor | None = None,
                 on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Integrate the flow from ``noise`` [B, N, C] (sigma = ``schedule.sigmas[0]``) to sigma 0 with Euler steps.

    Tokens with ``condition_mask`` [B, N] = 1 are given: they hold ``clean`` [B, N, C] throughout, enter the model
    with timestep 0 and are never updated (image-to-video's first latent frame, or the first m latent frames of a
    continuation), exactly as :func:`avatar_gen.model.flow.make_flow_inputs` presents them in training.  Every other
    token moves by ``(sigma_next - sigma) * velocity`` per step, in float32.  ``on_step(step)`` is called after each
    step.  Returns float32 [B, N, C].
    """
    device = noise.device
    batch, tokens, _ = noise.shape
    if condition_mask is None:
        condition_mask = torch.zeros(batch, tokens, device=device)
    condition_mask = condition_mask.to(device, torch.float32)
    keep = condition_mask.bool()[..., None]
    latents = noise.float()
    if clean is not None:
        latents = torch.where(keep, clean.to(device, torch.float32), latents)
    noised = 1.0 - condition_mask
    sigmas, timesteps = schedule.sigmas.to(device), schedule.timesteps.to(device)
    for step in range(schedule.num_steps):
        timestep = timesteps[step].expand(batch)[:, None] * noised
        prediction = velocity(latents, timestep).float()
        latents = torch.where(keep, latents, latents + (sigmas[step + 1] - sigmas[step]) * prediction)
        if on_step is not None:
            on_step(step)
    return latents
