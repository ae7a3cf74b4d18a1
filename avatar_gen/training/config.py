"""The training config: one typed, strict model per YAML section (see configs/train-*.yaml, docs/training.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from avatar_gen.config import ConfigPath, StrictModel, load_config
from avatar_gen.model.flow import token_count_shift
from avatar_gen.model.lora import DEFAULT_LORA_TARGETS


def _resolve_local(value: str, info: ValidationInfo) -> str:
    """A relative path that exists next to the YAML (or looks like a path) becomes absolute; a hub id stays."""
    base_dir = (info.context or {}).get("base_dir")
    expanded = os.path.expanduser(value)
    looks_like_path = expanded.startswith((".", "/", "~")) or os.path.isabs(expanded)
    candidate = Path(base_dir) / expanded if base_dir is not None and not os.path.isabs(expanded) else Path(expanded)
    if looks_like_path or candidate.exists():
        return os.path.normpath(str(candidate))
    return value


class ModelSection(StrictModel):
    pretrained: str = Field(description="LTX-Video pipeline: hub id (Lightricks/LTX-Video) or local folder")
    revision: str | None = Field(default=None, description="hub revision (branch, tag or commit)")
    dtype: Literal["bfloat16", "float32"] = Field(
        default="bfloat16", description="dtype of the frozen base weights (LoRA mode); trained weights stay fp32")

    _resolve_pretrained = field_validator("pretrained")(_resolve_local)


class LoraSection(StrictModel):
    train_mode: Literal["lora", "full"] = Field(
        default="lora", description="lora: adapters on target_modules; full: train the whole transformer")
    rank: int = Field(default=64, ge=1)
    alpha: float = Field(default=64.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), min_length=1)


class AudioSection(StrictModel):
    conditioning: Literal["features", "fixed_caption"] = Field(
        default="features",
        description="features: the caption slot holds the projection of the chunk's speech features (the avatar "
                    "recipe); fixed_caption: one fixed random embedding for every sample, no audio read (pretraining "
                    "an audio-free image-to-video base)")
    feature_dim: int | None = Field(default=None, ge=1,
                                    description="D of audio_latents/<key>_ff.npy [num_frames, D] (features mode)")
    fixed_caption_tokens: int = Field(default=8, ge=1, description="fixed_caption: tokens of the fixed embedding")
    fixed_caption_seed: int = Field(default=0, description="fixed_caption: seed of the fixed embedding")
    caption_channels: int | None = Field(
        default=None, ge=1,
        description="projection output width; default and required: the transformer's caption_channels")
    tokens_per_frame: int = Field(default=1, ge=1, le=8)
    max_tokens: int = Field(default=128, ge=1,
                            description="num_frames * tokens_per_frame must fit (128 for the real model)")
    hidden_dim: int = Field(default=1024, ge=1)
    position_embedding: Literal["learned", "sinusoidal", "none"] = "learned"
    input_norm: Literal["layer", "none"] = Field(
        default="layer",
        description="per-frame LayerNorm of the features; none for the logmel encoder (keeps loudness)")
    alignment: Literal["global", "local"] = Field(
        default="local",
        description="local: a video token sees only its frames' audio +- margin; global: all audio tokens "
                    "(docs/results.md: local learns the audio, global barely does)")
    local_margin_frames: int = Field(default=2, ge=0, description="local alignment: extra pixel frames on each side")

    @model_validator(mode="after")
    def _position_information(self) -> AudioSection:
        if self.conditioning == "fixed_caption":
            if self.alignment == "local" and "alignment" in self.model_fields_set:
                raise ValueError("alignment local needs audio tokens per frame; a fixed caption is attended globally")
            return self
        if self.feature_dim is None:
            raise ValueError("feature_dim is required with conditioning: features (the audio stage's feature width)")
        if self.alignment == "global" and self.position_embedding == "none":
            raise ValueError("global alignment needs frame-position information: position_embedding 'learned' or "
                             "'sinusoidal' (only the local mask tells tokens' frames apart without it)")
        return self


class DataSection(StrictModel):
    vae_latents: ConfigPath = Field(description="folder of <key>.pt + <key>.json")
    audio_latents: ConfigPath | None = Field(
        default=None, description="folder of <key>_ff.npy + <key>_text.json (needed with audio.conditioning: features)")
    held_out_fraction: float = Field(default=0.05, ge=0, lt=1,
                                     description="share of clips held out (by hash of clip id)")
    mouth_boxes: ConfigPath | None = Field(
        default=None, description="folder of <clip_id>.json mouth boxes (avatar_gen.latents.regions), needed by "
                                  "flow.mouth_loss_weight > 1")
    allow_missing_audio: bool = Field(default=False,
                                      description="skip (and log) chunks without audio features instead of failing")
    batch_size: int = Field(default=1, ge=1, description="per rank, per micro-step")
    num_workers: int = Field(default=2, ge=0)
    shuffle: bool = True


class FlowSection(StrictModel):
    logit_mean: float = 0.0
    logit_std: float = Field(default=1.0, gt=0)
    shift: float | Literal["auto"] = Field(
        default="auto", description="'auto': grows with the latent count (frames x height x width of the VAE's grid, "
                                    "before the transformer's patching, as LTXImageToVideoPipeline counts it)")
    base_seq_len: int = Field(default=1024, ge=1)
    max_seq_len: int = Field(default=4096, ge=2)
    base_shift: float = 0.95
    max_shift: float = 2.05
    uniform_fraction: float = Field(
        default=0.0, ge=0, le=1, description="share of samples whose sigma is drawn uniform in (0, 1) instead of "
                                             "from the shifted logit-normal: trains the low noise levels of the "
                                             "sampler's last steps, which a small pretraining otherwise never "
                                             "learns (docs/training.md)")
    mouth_loss_weight: float = Field(
        default=1.0, ge=1.0, description="loss weight of the tokens that cover a clip's mouth box (data.mouth_boxes) "
                                         "relative to the others: lip motion is a small part of the latents")

    @model_validator(mode="after")
    def _ordered(self) -> FlowSection:
        if self.max_seq_len <= self.base_seq_len:
            raise ValueError("max_seq_len must exceed base_seq_len")
        if isinstance(self.shift, float) and self.shift <= 0:
            raise ValueError("shift must be > 0")
        return self

    def shift_for(self, latent_positions: int) -> float:
        """The sigma shift for a video of ``latent_positions`` latents (frames x height x width, before patching)."""
        if self.shift == "auto":
            return token_count_shift(latent_positions, self.base_seq_len, self.max_seq_len, self.base_shift,
                                     self.max_shift)
        return float(self.shift)


class ConditioningSection(StrictModel):
    first_frame_probability: float = Field(
        default=0.5, ge=0, le=1, description="share of samples whose first latent frame is clean, timestep 0, no loss")
    continuation_probability: float = Field(
        default=0.0, ge=0, le=1,
        description="share of the samples with a clean first frame that get their first m latent frames clean "
                    "instead (m uniform in 2..continuation_max_frames): teaches continuing a previous chunk from its "
                    "last frames (docs/inference.md, long videos)")
    continuation_max_frames: int = Field(default=4, ge=2, description="largest m of continuation_probability")
    audio_dropout: float = Field(
        default=0.0, ge=0, le=1,
        description="share of samples whose speech features are replaced by the features of silence (what inference "
                    "feeds as the guidance negative), so that classifier-free guidance was trained")


class OptimizationSection(StrictModel):
    learning_rate: float = Field(default=1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="final lr / peak lr for linear and cosine")
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="clip gradients to this norm; null: no clipping")
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_steps: int = Field(ge=1, description="optimizer steps")
    seed: int = 42
    max_consecutive_nonfinite: int = Field(default=5, ge=1, description="stop after this many NaN/inf losses in a row")


class AccelerationSection(StrictModel):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["bf16", "fp32"] = "bf16"
    gradient_checkpointing: bool = True
    cpu_threads: int | None = Field(default=None, ge=1, description="torch threads on CPU (null: torch's default)")


class DistributedSection(StrictModel):
    backend: Literal["auto", "single", "deepspeed"] = Field(
        default="auto",
        description="auto: DeepSpeed when launched with WORLD_SIZE > 1 (deepspeed/torchrun), else single")
    deepspeed_config: ConfigPath | None = Field(default=None,
                                                description="DeepSpeed JSON (configs/deepspeed/zero2.json)")
    zero_stage: int | None = Field(default=None, ge=0, le=3,
                                   description="overrides the JSON's zero_optimization.stage (3 is refused: rank 0 "
                                               "exports and validates from whole weights)")


class CheckpointSection(StrictModel):
    every_n_steps: int = Field(default=500, ge=1)
    keep_last: int | None = Field(default=3, ge=1, description="null keeps all")
    resume: str | None = Field(default=None, description="null: start fresh; 'latest': newest in output_dir; or a path")

    @field_validator("resume")
    @classmethod
    def _resolve_resume(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "latest":
            return value
        return _resolve_local(value if value.startswith((".", "/", "~")) else "./" + value, info)


class ValidationSection(StrictModel):
    every_n_steps: int | None = Field(default=250, ge=1, description="null: no validation during training")
    held_out_chunks: int = Field(default=8, ge=0, description="held-out chunks scored (0: none)")
    train_chunks: int = Field(default=0, ge=0, description="also score this many training chunks (in-sample gain)")
    num_draws: int = Field(default=4, ge=1, description="fixed noise/sigma draws; the gain's spread is over these")
    seed: int = 1234
    sample_videos: bool = Field(default=False, description="decode sample videos with the speech muxed in")
    sample_chunks: int = Field(default=2, ge=1)
    sample_steps: int = Field(default=20, ge=1, description="Euler steps for sample videos")


class LoggingSection(StrictModel):
    log_every_n_steps: int = Field(default=10, ge=1)
    tensorboard: bool = True


class TrainConfig(StrictModel):
    output_dir: ConfigPath = Field(description="run folder: config.yaml, checkpoints/, tensorboard/, metrics.jsonl")
    model: ModelSection
    lora: LoraSection = Field(default_factory=LoraSection)
    audio: AudioSection
    data: DataSection
    flow: FlowSection = Field(default_factory=FlowSection)
    conditioning: ConditioningSection = Field(default_factory=ConditioningSection)
    optimization: OptimizationSection
    acceleration: AccelerationSection = Field(default_factory=AccelerationSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)
    checkpoints: CheckpointSection = Field(default_factory=CheckpointSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        if self.distributed.backend == "deepspeed" and self.distributed.deepspeed_config is None:
            raise ValueError("distributed.backend deepspeed needs distributed.deepspeed_config")
        if self.validation.held_out_chunks and self.data.held_out_fraction == 0:
            raise ValueError("validation.held_out_chunks > 0 needs data.held_out_fraction > 0")
        if self.audio.conditioning == "features" and self.data.audio_latents is None:
            raise ValueError("data.audio_latents is required with audio.conditioning: features")
        if self.flow.mouth_loss_weight > 1 and self.data.mouth_boxes is None:
            raise ValueError("flow.mouth_loss_weight > 1 needs data.mouth_boxes (where each clip's mouth is)")
        if self.audio.conditioning == "fixed_caption" and self.conditioning.audio_dropout:
            raise ValueError("conditioning.audio_dropout needs audio.conditioning: features (a fixed caption has no "
                             "speech to drop)")
        return self


def load_train_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    return load_config(TrainConfig, path, overrides)
