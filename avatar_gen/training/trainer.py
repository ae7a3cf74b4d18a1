"""One training loop for a single process (CPU or one GPU) and DeepSpeed (N ranks, ZeRO).

The launcher is the only difference (``python ltx_video/training.py`` or ``deepspeed --num_gpus=N``); what differs
between the engines lives in the stepper of :mod:`avatar_gen.training.distributed`.  Read :func:`rectified_flow_loss`
for the loss and :meth:`Trainer.train` for the loop; docs/training.md has the recipe, docs/CONTRACTS.md the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from avatar_gen.config import dump_config
from avatar_gen.errors import UserError
from avatar_gen.latents.regions import MouthBox, load_mouth_boxes
from avatar_gen.layout import SPLIT_FILE
from avatar_gen.ltx import LTX_SPATIAL_COMPRESSION, LTX_TEMPORAL_COMPRESSION
from avatar_gen.model.audio_projection import AudioProjection, AudioProjectionConfig
from avatar_gen.model.caption import FixedCaption, FixedCaptionConfig
from avatar_gen.model.checkpoint import (
    TRAINING_STATE_FOLDER, check_signature, checkpoint_metadata, export_model, finalize_checkpoint,
    load_base_transformer, load_trainable_weights, read_checkpoint_metadata, resolve_checkpoint, staging_folder,
    step_folder_name)
from avatar_gen.model.denoiser import AvatarDenoiser
from avatar_gen.model.flow import flow_loss, leading_frames_token_mask, make_flow_inputs, sample_sigmas
from avatar_gen.model.lora import attach_lora, make_lora_config
from avatar_gen.training.config import FlowSection, TrainConfig
from avatar_gen.training.dataset import (
    ChunkRecord, LatentAudioDataset, ResumableShardSampler, check_uniform_shapes, collate, read_silence, scan_chunks,
    split_records)
from avatar_gen.training.distributed import make_stepper, rng_state, seed_everything, set_rng_state, setup_distributed
from avatar_gen.training.metrics import MetricsLog, peak_memory_mb
from avatar_gen.training.safeguards import apply_optimizer_settings, lock_run_folder, nonfinite_weights
from avatar_gen.training.validation import SampleWriter, audio_gain, fixed_draw_loss
from avatar_gen.utils.datafiles import load_json, load_tensor_file
from avatar_gen.utils.io import atomic_path, atomic_write_json, atomic_write_text, staging_path
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"
RESOLVED_CONFIG = "config.yaml"


class NonFiniteLossError(UserError):
    """The loss stayed NaN/inf for too many micro-batches in a row; a checkpoint of the last good state was saved."""


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


def video_geometry(record: ChunkRecord) -> dict[str, int]:
    """VAE compression factors of a chunk: those its metadata records (the VAE stage writes the loaded VAE's), else
    derived from its frame count, size and latent shape (LTX's when a chunk cannot tell)."""
    _, latent_frames, latent_height, _ = record.latent_shape
    temporal = (record.num_frames - 1) // (latent_frames - 1) if latent_frames > 1 else LTX_TEMPORAL_COMPRESSION
    spatial = record.height // latent_height if record.height and latent_height else LTX_SPATIAL_COMPRESSION
    return {"temporal_compression": int(record.vae.get("temporal_compression", temporal)),
            "spatial_compression": int(record.vae.get("spatial_compression", spatial))}


def rectified_flow_loss(denoiser: AvatarDenoiser, latents: torch.Tensor, audio: torch.Tensor,
                        frame_rate: float | torch.Tensor, generator: torch.Generator, condition_probability: float,
                        flow: FlowSection, device: torch.device, forward: Callable[..., torch.Tensor] | None = None,
                        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                        continuation_probability: float = 0.0, continuation_max_frames: int = 0,
                        token_weight: torch.Tensor | None = None, sigma: float | None = None) -> torch.Tensor:
    """The training loss: rectified flow of normalised ``latents`` [B, C, F', h, w] given ``audio`` [B, F, D] at
    ``frame_rate`` (one number, or one per item [B]: RoPE scales time per item).

    All randomness (sigma, noise, which samples get their first frame clean, and with ``continuation_probability``
    which get their first m <= ``continuation_max_frames`` latent frames clean instead) comes from ``generator``, so
    the same generator state gives the same draws with another audio (the audio-conditioning gain relies on it).
    ``token_weight`` [N] (every sample) or [B, N]: a weight per packed token, multiplying the loss weight (the mouth's
    tokens: a measurement's region, or training's ``flow.mouth_loss_weight``).  ``sigma``: one noise level for every
    sample instead of drawn ones (the measurement's loss by noise level; the draw is made all the same, so the rest
    of the random stream does not depend on it).
    ``forward`` is the module the forward calls (default ``denoiser``; training passes its stepper's).  The trainer
    and the measurement of a saved checkpoint (``python -m avatar_gen.toy measure``) share this one definition.
    """
    forward = denoiser if forward is None else forward
    batch_size = latents.shape[0]
    frames, height, width = denoiser.token_grid(latents)
    clean = denoiser.pack(latents.to(device))
    # Noising: a shifted logit-normal sigma per sample (for flow.uniform_fraction of them a uniform one), Gaussian
    # noise, the first latent frame given clean.  The shift grows with the latent grid's size, counted before
    # patching as the pipeline counts it at inference.
    latent_positions = latents.shape[2] * latents.shape[3] * latents.shape[4]
    sigmas = sample_sigmas(batch_size, flow.shift_for(latent_positions), flow.logit_mean, flow.logit_std, generator,
                           uniform_fraction=flow.uniform_fraction)
    if sigma is not None:
        sigmas = torch.full_like(sigmas, sigma)
    noise = torch.randn(clean.shape, generator=generator)
    clean_frames = (torch.rand(batch_size, generator=generator) < condition_probability).long()
    if continuation_probability > 0:  # (no draw otherwise: runs without continuation keep their random stream)
        continued = torch.rand(batch_size, generator=generator) < continuation_probability
        most = min(continuation_max_frames, frames - 1)
        extra = torch.randint(2, max(most, 2) + 1, (batch_size,), generator=generator).clamp(max=frames - 1)
        clean_frames = torch.where(continued & (clean_frames > 0), extra, clean_frames)
    condition_mask = leading_frames_token_mask(frames, height * width, clean_frames)
    inputs = make_flow_inputs(clean, noise.to(device), sigmas.to(device), condition_mask.to(device))
    if token_weight is not None:
        inputs = replace(inputs, loss_weight=inputs.loss_weight * token_weight.to(inputs.loss_weight))
    # Forward: the velocity prediction from the noisy tokens and the speech.
    with autocast():
        prediction = forward(inputs.noisy, audio.to(device), inputs.timestep, frames, height, width, frame_rate)
    # Loss: mean squared velocity error on the tokens that were noised.
    return flow_loss(prediction, inputs)


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, float] | None = None


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
        # One training per run folder: rank 0 holds its lock from here until train() returns (or this fails).
        self.run_lock = lock_run_folder(self.output_dir) if self.dist.is_main else None
        try:
            self._build(transformer)
        except BaseException:
            self.release_run_folder()
            raise

    def _build(self, transformer: torch.nn.Module | None) -> None:
        config = self.config
        if self.dist.is_main:
            atomic_write_text(self.output_dir / RESOLVED_CONFIG, dump_config(config))
        resume_from = self._find_resume_checkpoint()
        self._build_data()
        self._build_model(transformer)
        self._build_stepper()
        self.samples = SampleWriter(config, self.model, self.stepper.autocast, self.device)
        self.step = 0
        self.saved_step: int | None = None  # the step of the last checkpoint written or resumed from
        self.data_epoch, self.data_batches_in_epoch = 0, 0
        self.nonfinite_total, self.nonfinite_in_row = 0, 0
        self.metrics = MetricsLog(self.output_dir, self.dist.is_main)
        self.last_validation: dict[str, float] | None = None
        if resume_from is not None:
            self._resume(resume_from)
        self.metrics.open_tensorboard(config.logging.tensorboard, self.step)

    def release_run_folder(self) -> None:
        """Let another training use the run folder (train() calls it when it returns or fails)."""
        if self.run_lock is not None:
            self.run_lock.close()
            self.run_lock = None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.metrics.history

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
        self.audio_free = config.audio.conditioning == "fixed_caption"
        # An audio-free run (a base pretrained without speech) reads no audio features at all.
        records = scan_chunks(config.data.vae_latents, None if self.audio_free else config.data.audio_latents,
                              config.audio.feature_dim, config.data.allow_missing_audio)
        check_uniform_shapes(records, config.data.batch_size)
        self.train_records, self.held_out_records = split_records(
            records, config.data.held_out_fraction, self.output_dir / SPLIT_FILE, write=self.dist.is_main)
        self.train_dataset = LatentAudioDataset(self.train_records)
        self.sampler = ResumableShardSampler(len(self.train_dataset), self.dist.rank, self.dist.world_size,
                                             seed=config.optimization.seed, shuffle=config.data.shuffle)
        self.batches_per_epoch = len(self.sampler) // config.data.batch_size
        if self.batches_per_epoch == 0:
            raise UserError(f"{len(self.train_records)} training chunk(s) over {self.dist.world_size} rank(s) do not "
                            f"fill one batch of data.batch_size={config.data.batch_size}")
        first = self.train_records[0]
        self.geometry = video_geometry(first)
        geometries = {tuple(video_geometry(record).values()) for record in records}
        if len(geometries) > 1:
            raise UserError(f"the latents come from VAEs with different compression (temporal, spatial): "
                            f"{sorted(geometries)}; train on one VAE's latents")
        # Audio dropout puts the features of silence (the guidance negative inference feeds) in place of a sample's.
        self.silence = (read_silence(config.data.audio_latents, self.train_records)
                        if config.conditioning.audio_dropout else {})
        self.mouth_boxes = self._load_mouth_boxes()
        self._mouth_weights: dict[tuple, torch.Tensor] = {}
        log.info("data: %d training chunks (%d clips), %d held-out chunks (%d clips), latents %s",
                 len(self.train_records), len({r.clip_id for r in self.train_records}), len(self.held_out_records),
                 len({r.clip_id for r in self.held_out_records}), list(first.latent_shape))

    def _load_mouth_boxes(self) -> dict[str, MouthBox]:
        """Every training clip's mouth box when ``flow.mouth_loss_weight`` > 1 (else none): a clip without one, or
        one drawn on frames of another size than its chunks, is refused rather than weighed wrongly."""
        if self.config.flow.mouth_loss_weight == 1:
            return {}
        folder = self.config.data.mouth_boxes
        clip_ids = {record.clip_id for record in self.train_records}
        boxes = load_mouth_boxes(folder, clip_ids)
        missing = sorted(clip_ids - boxes.keys())
        if missing:
            raise UserError(f"flow.mouth_loss_weight needs a mouth box for every training clip; {folder} has none for "
                            f"{len(missing)} clip(s), e.g. {', '.join(missing[:3])}")
        for record in self.train_records:
            box = boxes[record.clip_id]
            if (box.height, box.width) != (record.height, record.width):
                raise UserError(f"{folder}/{record.clip_id}.json describes {box.width}x{box.height} frames, but chunk "
                                f"{record.key} has {record.width}x{record.height}: write the boxes for the frames "
                                f"the latents encode")
        without = sorted(clip_id for clip_id, box in boxes.items() if box.box is None)
        log.info("mouth-weighted loss: x%g on the tokens of each clip's mouth box (%s); %d of %d clips have no mouth "
                 "box (their files say why, e.g. %s): their tokens weigh 1", self.config.flow.mouth_loss_weight, folder,
                 len(without), len(boxes), without[0] if without else "-")
        return boxes

    def mouth_token_weight(self, latents: torch.Tensor, indices: torch.Tensor) -> torch.Tensor | None:
        """[B, N] loss weights of a training batch: ``flow.mouth_loss_weight`` on the tokens over each sample's mouth
        box, 1 elsewhere; None without mouth weighting."""
        if not self.mouth_boxes:
            return None
        grid = self.model.token_grid(latents)
        weights = []
        for index in indices.tolist():
            clip_id = self.train_records[int(index)].clip_id
            key = (clip_id, *grid)
            if key not in self._mouth_weights:
                frames, rows, cols = grid
                cells = torch.from_numpy(self.mouth_boxes[clip_id].cells(rows, cols)).float().flatten()
                self._mouth_weights[key] = (1 + (self.config.flow.mouth_loss_weight - 1) * cells).repeat(frames)
            weights.append(self._mouth_weights[key])
        return torch.stack(weights)

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
        patch_volume = transformer.config["patch_size"] ** 2 * transformer.config["patch_size_t"]
        if transformer.config["in_channels"] != latent_channels * patch_volume:
            raise UserError(f"latents have {latent_channels} channels, the transformer expects "
                            f"in_channels={transformer.config['in_channels']}: latents from another VAE?")
        num_frames = self.train_records[0].num_frames
        if not self.audio_free and num_frames * config.audio.tokens_per_frame > config.audio.max_tokens:
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
        if self.audio_free:
            projection, caption = None, FixedCaption(FixedCaptionConfig(
                tokens=config.audio.fixed_caption_tokens, caption_channels=caption_channels,
                seed=config.audio.fixed_caption_seed))
        else:
            caption, projection = None, AudioProjection(AudioProjectionConfig(
                feature_dim=config.audio.feature_dim, caption_channels=caption_channels,
                tokens_per_frame=config.audio.tokens_per_frame, max_tokens=config.audio.max_tokens,
                hidden_dim=config.audio.hidden_dim, position_embedding=config.audio.position_embedding,
                input_norm=config.audio.input_norm))
        self.model = AvatarDenoiser(transformer, projection, alignment="global" if self.audio_free
                                    else config.audio.alignment, local_margin_frames=config.audio.local_margin_frames,
                                    fixed_caption=caption, **self.geometry)
        self.model.to(self.device)
        self.model.train()
        self.trainable = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        # peft gives adapters the dtype of the layer they wrap: over a bf16 base, AdamW would update bf16 weights,
        # and updates of ~1e-4 on entries of ~0.02 round away.  Trained weights live in fp32 (autocast computes in
        # bf16); DeepSpeed keeps its own fp32 master copy.
        for parameter in self.trainable:
            parameter.data = parameter.data.float()
        count = sum(parameter.numel() for parameter in self.trainable)
        log.info("model: %s training, %.2fM trainable parameters, %s", config.lora.train_mode, count / 1e6,
                 f"a fixed caption of {config.audio.fixed_caption_tokens} tokens (no audio)" if self.audio_free
                 else f"alignment {config.audio.alignment}")

    def _build_stepper(self) -> None:
        optimization = self.config.optimization
        optimizer = torch.optim.AdamW(self.trainable, lr=optimization.learning_rate, betas=optimization.betas,
                                      eps=optimization.eps, weight_decay=optimization.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
            step, optimization.warmup_steps, optimization.max_steps, optimization.schedule, optimization.min_lr_ratio))
        self.lr_scheduler = scheduler
        self.stepper, self.model = make_stepper(
            self.config, self.dist, self.model, self.trainable, optimizer, scheduler,
            load_weights=lambda folder: load_trainable_weights(self.model, folder, lora=self.lora_config is not None))

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

    def training_step(self, model: torch.nn.Module, latents: torch.Tensor, audio: torch.Tensor,
                      frame_rate: float | torch.Tensor, generator: torch.Generator,
                      condition_probability: float, continuation_probability: float = 0.0,
                      token_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The loss (:func:`rectified_flow_loss`) of ``latents`` [B, C, F', h, w] given ``audio`` [B, F, D] at
        ``frame_rate``, all randomness from ``generator``; ``model`` is what the forward calls (the stepper's, or the
        bare model for validation); ``token_weight`` [B, N] (:meth:`mouth_token_weight`) or None."""
        return rectified_flow_loss(self.model, latents, audio, frame_rate, generator, condition_probability,
                                   self.config.flow, self.device, forward=model, autocast=self.stepper.autocast,
                                   continuation_probability=continuation_probability,
                                   continuation_max_frames=self.config.conditioning.continuation_max_frames,
                                   token_weight=token_weight)

    def optimizer_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, float] | None:
        """Consume micro-batches until ``gradient_accumulation_steps`` finite ones were back-propagated, update.

        A NaN/inf loss skips its micro-batch (on every rank) and is counted; ``max_consecutive_nonfinite`` in a row
        stop the run.  Returns the step's metrics, or None when a non-finite gradient norm skipped the update.
        """
        accumulation = self.config.optimization.gradient_accumulation_steps
        losses, samples = [], 0
        while len(losses) < accumulation:
            batch = next(batches)
            audio = self.drop_audio(batch["audio"], batch["index"])
            loss = self.training_step(self.stepper.forward, batch["latents"], audio, batch["fps"],
                                      self.noise_generator, self.config.conditioning.first_frame_probability,
                                      self.config.conditioning.continuation_probability,
                                      self.mouth_token_weight(batch["latents"], batch["index"]))
            if self.dist.any_rank(not bool(torch.isfinite(loss.detach()).item())):
                self._count_nonfinite("loss")
                continue
            self.stepper.backward(loss)
            losses.append(float(loss.detach()))
            samples += batch["latents"].shape[0]
        lr = self.stepper.optimizer.param_groups[0]["lr"]
        norm = self.stepper.apply_gradients()
        if norm is None:
            self._count_nonfinite("gradient norm")
            return None
        self.nonfinite_in_row = 0
        self.step += 1
        return {"loss": sum(losses) / len(losses), "lr": lr, "grad_norm": norm,
                "samples": samples * self.dist.world_size}

    def drop_audio(self, audio: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``audio`` [B, F, D] with each sample's rows replaced, with probability ``conditioning.audio_dropout``,
        by the features of silence of its length (what inference feeds as the guidance negative).  The draws come
        from the noise generator (resumed exactly); with dropout 0 nothing is drawn, so such runs are unchanged."""
        probability = self.config.conditioning.audio_dropout
        if not probability:
            return audio
        dropped = torch.rand(audio.shape[0], generator=self.noise_generator) < probability
        if not bool(dropped.any()):
            return audio
        audio = audio.clone()
        for row in dropped.nonzero(as_tuple=True)[0].tolist():
            record = self.train_records[int(indices[row])]
            audio[row] = self.silence[(record.num_frames, record.fps)]
        return audio

    def _count_nonfinite(self, what: str) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        log.warning("non-finite %s at step %d: skipped (%d in a row, %d in total)", what, self.step,
                    self.nonfinite_in_row, self.nonfinite_total)
        limit = self.config.optimization.max_consecutive_nonfinite
        if self.nonfinite_in_row >= limit:
            if self.step == (self.saved_step or 0):
                # No update since the last checkpoint (or the start): these weights gave finite losses.
                path = self.save_checkpoint() if self.saved_step is None else resolve_checkpoint(self.checkpoints_dir)
                kept = f"weights of the last good step saved in {path}"
            else:
                # The last update may be what diverged: its weights have given no finite loss, so they are not saved.
                first = (self.saved_step or 0) + 1
                steps = f"step {first}" if first == self.step else f"steps {first}-{self.step}"
                kept = f"the weights of {steps} are not saved (they may have diverged), {self._last_checkpoint_text()}"
            raise NonFiniteLossError(
                f"the {what} was NaN/inf {self.nonfinite_in_row} times in a row at step {self.step} "
                f"(optimization.max_consecutive_nonfinite={limit}); {kept}. "
                f"Check the data (NaN latents/features) or lower optimization.learning_rate")

    def _last_checkpoint_text(self) -> str:
        try:
            return f"{resolve_checkpoint(self.checkpoints_dir)} stays the last checkpoint"
        except UserError:
            return "no checkpoint was saved"

    # -------------------------------------------------------------------------------------- the loop

    def train(self, stop_after_step: int | None = None) -> TrainResult:
        """Run to ``optimization.max_steps``; ``stop_after_step`` ends early (as if killed after that step's
        checkpoint) without changing the LR schedule, which depends on ``max_steps``."""
        try:
            return self._train(stop_after_step)
        finally:
            self.release_run_folder()

    def _train(self, stop_after_step: int | None) -> TrainResult:
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
        self.metrics.flush()
        return TrainResult(step=self.step, checkpoint=last_checkpoint, history=self.history,
                           validation=self.last_validation)

    def _log_step(self, metrics: dict[str, float], elapsed: float) -> None:
        row = {"step": self.step, "loss": metrics["loss"], "lr": metrics["lr"], "grad_norm": metrics["grad_norm"],
               "step_time_s": elapsed, "samples_per_s": metrics["samples"] / elapsed if elapsed > 0 else 0.0,
               "peak_memory_mb": peak_memory_mb(self.device), "nonfinite_skipped": self.nonfinite_total}
        self.metrics.record(row, "train", self.step)
        log.info("step %d: loss %.4f lr %.2e grad-norm %.3f %.2fs/step", self.step, row["loss"], row["lr"],
                 row["grad_norm"], elapsed)

    # -------------------------------------------------------------------------------------- validation

    def _validation_loss(self, latents: torch.Tensor, audio: torch.Tensor, record: ChunkRecord,
                         generator: torch.Generator) -> torch.Tensor:
        return self.training_step(self.model, latents, audio, record.fps, generator, condition_probability=1.0)

    def audio_gain(self, records: list[ChunkRecord]) -> dict[str, float]:
        """The audio-conditioning gain on ``records`` (:func:`avatar_gen.training.validation.audio_gain`)."""
        return audio_gain(records, self._validation_loss, self.config.validation.num_draws, self.config.validation.seed)

    def flow_loss(self, records: list[ChunkRecord]) -> dict[str, float]:
        """The flow loss on ``records`` at fixed draws (:func:`avatar_gen.training.validation.fixed_draw_loss`)."""
        return fixed_draw_loss(records, self._validation_loss, self.config.validation.num_draws,
                               self.config.validation.seed)

    def validate(self) -> dict[str, float]:
        """Audio-conditioning gain (an audio-free run: the flow loss) on held-out (and optionally training) chunks;
        rank 0 computes, others wait."""
        results: dict[str, float] = {}
        if self.dist.is_main:
            validation = self.config.validation
            self.model.eval()
            for name, records, count in (("val", self.held_out_records, validation.held_out_chunks),
                                         ("train_eval", self.train_records, validation.train_chunks)):
                if count and self.audio_free and records:
                    results.update({f"{name}_{key}": value for key, value in self.flow_loss(records[:count]).items()})
                elif count and len(records) >= 2:
                    results.update({f"{name}_{key}": value for key, value in self.audio_gain(records[:count]).items()})
            if validation.sample_videos and self.held_out_records:
                self.samples.write(self.held_out_records[:validation.sample_chunks], self.step)
            self.model.train()
            if results:
                self.metrics.record(dict(results, step=self.step), "validation", self.step)
                log.info("validation step %d: %s", self.step,
                         ", ".join(f"{key} {value:.4f}" for key, value in results.items()))
        self.dist.barrier()
        self.last_validation = results or self.last_validation
        return results

    # -------------------------------------------------------------------------------------- checkpoints

    def checkpoint_metadata(self) -> dict[str, Any]:
        first, lora = self.train_records[0], self.config.lora
        return checkpoint_metadata(
            self.step, self.config.model.pretrained, self.config.model.revision,
            None if self.lora_config is None else {
                "rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": lora.target_modules},
            first.audio_encoder,
            {"height": first.height, "width": first.width, "num_frames": first.num_frames, "fps": first.fps},
            self.config.audio.alignment, self.config.audio.local_margin_frames,
            latents={"latent_shape": list(first.latent_shape), "vae": first.vae},
            audio_dropout=self.config.conditioning.audio_dropout,
            continuation_max_frames=(self.config.conditioning.continuation_max_frames
                                     if self.config.conditioning.continuation_probability > 0 else 0),
            **self.geometry)

    def save_checkpoint(self) -> Path:
        """Write checkpoint ``step`` atomically (every rank calls it); returns its final folder.

        Weights holding NaN or infinity (a diverged run) are never saved: NonFiniteLossError, ``latest`` unchanged."""
        bad = nonfinite_weights(self.model.named_parameters())
        if self.dist.any_rank(bool(bad)):
            raise NonFiniteLossError(
                f"the weights became NaN/inf by step {self.step} (e.g. {', '.join(bad[:2]) or 'on another rank'}): "
                f"not saved, {self._last_checkpoint_text()}. Lower optimization.learning_rate or check the data")
        staging = staging_path(self.checkpoints_dir / step_folder_name(self.step))
        if self.dist.is_main:
            staging = staging_folder(self.checkpoints_dir, self.step)
            (staging / TRAINING_STATE_FOLDER).mkdir()
        self.dist.barrier()
        state_dir = staging / TRAINING_STATE_FOLDER
        engine_record = self.stepper.save(state_dir, self.dist.is_main)
        with atomic_path(state_dir / f"rank_{self.dist.rank:03d}.pt") as tmp:
            torch.save({"rng": rng_state(), "noise_generator": self.noise_generator.get_state()}, tmp)
        if self.dist.is_main:
            atomic_write_json(state_dir / "trainer.json", {
                "step": self.step, "world_size": self.dist.world_size, "data_epoch": self.data_epoch,
                "data_batches_in_epoch": self.data_batches_in_epoch, "nonfinite_total": self.nonfinite_total,
                **engine_record})
            export_model(staging, self.model.transformer, self.model.caption,
                         self.checkpoint_metadata(),
                         self.lora_config)
        self.dist.barrier()
        final = self.checkpoints_dir / step_folder_name(self.step)
        if self.dist.is_main:
            final = finalize_checkpoint(self.checkpoints_dir, staging, self.step, self.config.checkpoints.keep_last)
        self.dist.barrier()
        self.saved_step = self.step
        return final

    def _resume(self, folder: Path) -> None:
        metadata = read_checkpoint_metadata(folder)
        state_dir = folder / TRAINING_STATE_FOLDER
        trainer_file = state_dir / "trainer.json"
        trainer_state = load_json(trainer_file, "training state") if trainer_file.is_file() else None
        if not isinstance(trainer_state, dict):
            raise UserError(f"{folder} has no {TRAINING_STATE_FOLDER}/trainer.json: "
                            "not a resumable training checkpoint")
        where = f"checkpoint {folder}"
        mode = "lora" if self.lora_config is not None else "full"
        if metadata.get("transformer_training") != mode:
            raise UserError(f"{where} trained '{metadata.get('transformer_training')}', this config trains '{mode}'")
        check_signature(metadata.get("transformer_config", {}), self.model.transformer, where)
        caption = self.model.caption
        recorded_key = "fixed_caption" if self.audio_free else "audio_projection"
        if metadata.get(recorded_key) != caption.config.model_dump(mode="json"):
            raise UserError(f"{where}: its {recorded_key.replace('_', ' ')} {metadata.get(recorded_key)} differs from "
                            f"this config's {caption.config.model_dump(mode='json')}")
        self.stepper.load(folder, state_dir, trainer_state)
        # The optimizer state brings back the saved run's settings; this run's config (what config.yaml records) wins.
        optimization = self.config.optimization
        changes = apply_optimizer_settings(self.stepper.optimizer, self.lr_scheduler, optimization.learning_rate,
                                           optimization.betas, optimization.eps, optimization.weight_decay)
        if changes:
            log.info("resume: the config's optimizer settings replace the checkpoint's: %s", "; ".join(changes))
        self.step = self.saved_step = int(trainer_state["step"])
        self.nonfinite_total = int(trainer_state.get("nonfinite_total", 0))
        rank_file = state_dir / f"rank_{self.dist.rank:03d}.pt"
        if trainer_state.get("world_size") == self.dist.world_size and rank_file.is_file():
            self.data_epoch = int(trainer_state["data_epoch"])
            self.data_batches_in_epoch = int(trainer_state["data_batches_in_epoch"])
            rank_state = load_tensor_file(rank_file, "training state")
            set_rng_state(rank_state["rng"])
            self.noise_generator.set_state(rank_state["noise_generator"])
        else:
            self.data_epoch, self.data_batches_in_epoch = int(trainer_state["data_epoch"]) + 1, 0
            log.warning("resuming with %d ranks a checkpoint of %s ranks: data restarts at epoch %d, fresh RNG",
                        self.dist.world_size, trainer_state.get("world_size"), self.data_epoch)
        self.metrics.keep_until(self.step)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", folder, self.step, self.data_epoch,
                 self.data_batches_in_epoch)


def train(config: TrainConfig) -> TrainResult:
    """Build a :class:`Trainer` and run it to ``optimization.max_steps``."""
    return Trainer(config).train()
