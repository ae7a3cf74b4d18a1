"""Validation during training: does the model use the speech, and what does it make of a held-out chunk?

The audio-conditioning gain compares the loss with a chunk's own audio to the loss with another chunk's audio at
the same noise; sample videos run the Euler sampler from a held-out chunk's first frame.  See docs/training.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from avatar_gen.errors import UserError, first_line
from avatar_gen.ltx import LTX_DECODE_NOISE_SCALE, LTX_DECODE_TIMESTEP
from avatar_gen.model.checkpoint import step_folder_name
from avatar_gen.model.flow import first_frame_token_mask
from avatar_gen.model.sampling import SigmaSchedule, euler_sample, sigma_schedule
from avatar_gen.training.config import TrainConfig
from avatar_gen.training.dataset import ChunkRecord, LatentAudioDataset

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor, ChunkRecord, torch.Generator], torch.Tensor]
"""``loss(latents [1, C, F', h, w], audio [1, F, D], record, generator)``: the training loss of the chunk ``record``
(its frame rate; a measurement may weigh its tokens), first frame given."""


@torch.no_grad()
def audio_gain(records: list[ChunkRecord], loss: LossFn, num_draws: int, seed: int) -> dict[str, float]:
    """Loss with the true audio vs with another chunk's audio at the same noise and sigma draws.

    ``audio_gain`` = mean shuffled loss / mean true loss (> 1: the model uses the speech), averaged over
    ``num_draws`` draws; ``audio_gain_std`` is its spread over the draws.  Chunks are paired with the next chunk of
    the same frame count; fewer than two such chunks give ``{}``.
    """
    dataset = LatentAudioDataset(records)
    items = [dataset[index] for index in range(len(dataset))]
    partner = {}
    for index, item in enumerate(items):
        same = [other for other in range(len(items)) if other != index
                and items[other]["audio"].shape == item["audio"].shape
                and items[other]["latents"].shape == item["latents"].shape]
        if same:
            partner[index] = min(same, key=lambda other, index=index: (other - index) % len(items))
    if not partner:
        return {}
    gains, true_means, shuffled_means = [], [], []
    for draw in range(num_draws):
        true_losses, shuffled_losses = [], []
        for index, other in partner.items():
            latents, record = items[index]["latents"][None], records[index]
            for audio, bucket in ((items[index]["audio"], true_losses), (items[other]["audio"], shuffled_losses)):
                generator = torch.Generator().manual_seed(seed + 7919 * draw + index)
                bucket.append(float(loss(latents, audio[None], record, generator)))
        true_means.append(float(np.mean(true_losses)))
        shuffled_means.append(float(np.mean(shuffled_losses)))
        gains.append(shuffled_means[-1] / max(true_means[-1], 1e-12))
    return {"loss_true": float(np.mean(true_means)), "loss_shuffled": float(np.mean(shuffled_means)),
            "audio_gain": float(np.mean(gains)), "audio_gain_std": float(np.std(gains)), "chunks": float(len(partner))}


@torch.no_grad()
def fixed_draw_loss(records: list[ChunkRecord], loss: LossFn, num_draws: int, seed: int) -> dict[str, float]:
    """The flow loss of ``records`` with their own audio at the fixed noise and sigma draws :func:`audio_gain` uses:
    ``loss`` (mean over the draws) and ``loss_std`` (its spread over the draws).  For runs without audio (an
    audio-free base), where there is no gain to measure."""
    dataset = LatentAudioDataset(records)
    items = [dataset[index] for index in range(len(dataset))]
    means = []
    for draw in range(num_draws):
        losses = []
        for index, (record, item) in enumerate(zip(records, items)):
            generator = torch.Generator().manual_seed(seed + 7919 * draw + index)
            losses.append(float(loss(item["latents"][None], item["audio"][None], record, generator)))
        means.append(float(np.mean(losses)))
    return {"loss": float(np.mean(means)), "loss_std": float(np.std(means)), "chunks": float(len(records))}


class SampleWriter:
    """Sample videos of held-out chunks: the model's latents from the chunk's first frame and speech, decoded.

    A preview is sampled and decoded as inference does it (docs/training.md, "Validation"): inference's schedule
    for the base model's scheduler config and the chunk's latent count
    (:func:`avatar_gen.model.sampling.sigma_schedule`), inference's Euler loop
    (:func:`avatar_gen.model.sampling.euler_sample`), and the VAE's decode timestep and noise of :mod:`avatar_gen.ltx`.
    """

    def __init__(self, config: TrainConfig, model: torch.nn.Module,
                 autocast: Callable[[], contextlib.AbstractContextManager], device: torch.device):
        self.config, self.model, self.autocast, self.device = config, model, autocast, device
        self._vae = None
        self._scheduler_config: dict | None = None

    def inference_schedule(self, num_steps: int, latent_frames: int, latent_height: int,
                           latent_width: int) -> SigmaSchedule:
        """The schedule inference samples a latent grid of this size (before patching) with: ``model.pretrained``'s
        scheduler config, :func:`avatar_gen.model.sampling.sigma_schedule`."""
        if self._scheduler_config is None:
            from diffusers import FlowMatchEulerDiscreteScheduler

            pretrained, revision = self.config.model.pretrained, self.config.model.revision
            try:
                self._scheduler_config = dict(FlowMatchEulerDiscreteScheduler.from_pretrained(
                    pretrained, subfolder="scheduler", revision=revision).config)
            except (OSError, ValueError) as exc:
                raise UserError(f"sample videos need the scheduler of model.pretrained {pretrained} (a pipeline "
                                f"folder or hub id): {first_line(exc)}") from None
        try:
            return sigma_schedule(self._scheduler_config, latent_frames * latent_height * latent_width, num_steps)
        except ValueError as exc:
            raise UserError(f"sample videos: {first_line(exc)}") from None

    @torch.no_grad()
    def sample_latents(self, record: ChunkRecord, audio: torch.Tensor, num_steps: int, seed: int = 0,
                       schedule: SigmaSchedule | None = None) -> torch.Tensor:
        """Normalised latents [C, F', h, w] for ``record``'s first frame and ``audio`` [F, D].

        ``schedule``: default inference's for ``num_steps`` steps (:meth:`inference_schedule`).
        """
        latents = LatentAudioDataset([record])[0]["latents"][None]
        frames, height, width = self.model.token_grid(latents)
        clean = self.model.pack(latents.to(self.device))
        condition = first_frame_token_mask(1, frames, height * width, torch.ones(1, dtype=torch.bool)).to(self.device)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)).to(self.device)
        if schedule is None:
            schedule = self.inference_schedule(num_steps, *latents.shape[2:])
        speech = audio[None].to(self.device)

        def velocity(current: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return self.model(current, speech, timestep, frames, height, width, record.fps)

        generated = euler_sample(velocity, noise, schedule, clean=clean, condition_mask=condition)
        return self.model.unpack(generated, frames, height, width)[0].cpu()

    def write(self, records: list[ChunkRecord], step: int) -> list[Path]:
        """Decode sampled videos to ``<output_dir>/samples/step_XXXXXX/<key>.mp4`` with their speech muxed in
        (the chunk's ``audio_wav/<key>.wav`` beside ``data.vae_latents``; a missing one is named in a warning)."""
        from avatar_gen.latents import decode_latents, denormalize_latents, load_vae
        from avatar_gen.media import write_video

        if self._vae is None:
            self._vae = load_vae(self.config.model.pretrained, self.config.model.revision, dtype="fp32",
                                 device=self.device).vae
        folder = Path(self.config.output_dir) / "samples" / step_folder_name(step)
        written = []
        for record in records:
            audio = LatentAudioDataset([record])[0]["audio"]
            generated = self.sample_latents(record, audio, self.config.validation.sample_steps)
            raw = denormalize_latents(generated, record.vae["latents_mean"], record.vae["latents_std"],
                                      float(record.vae.get("scaling_factor", 1.0)))
            frames = decode_latents(self._vae, raw.to(self.device), decode_timestep=LTX_DECODE_TIMESTEP,
                                    decode_noise_scale=LTX_DECODE_NOISE_SCALE,
                                    generator=torch.Generator(device=self.device).manual_seed(0))
            wav = Path(self.config.data.vae_latents).parent / "audio_wav" / f"{record.key}.wav"
            if record.audio_path is not None and not wav.is_file():  # an audio-free run has no speech to mux
                log.warning("sample video %s has no sound: %s is missing", record.key, wav)
            written.append(write_video(folder / f"{record.key}.mp4", frames, record.fps,
                                       audio=wav if wav.is_file() else None))
        log.info("sample videos: %s", folder)
        return written
