"""The toy world's pretraining settings (``configs/toy-pretrain.yaml``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from avatar_gen.config import ConfigPath, StrictModel


class ToyDataSection(StrictModel):
    """Synthetic close-up clips: a training set and a held-out set with other figures, sentences and voices."""

    size: int = Field(default=128, ge=64, description="frame width = height, pixels")
    fps: float = Field(default=25.0, gt=0)
    train_clips: int = Field(default=240, ge=2)
    held_out_clips: int = Field(default=24, ge=1)
    min_seconds: float = Field(default=3.0, ge=1.0)
    max_seconds: float = Field(default=6.0, ge=1.0)
    train_voices: list[str] = Field(default_factory=lambda: ["en-us", "en-gb", "en-us+f3", "en-us+m3"], min_length=1)
    held_out_voices: list[str] = Field(default_factory=lambda: ["en-gb+f2", "en-us+f4"], min_length=1)

    @model_validator(mode="after")
    def _voices_disjoint(self) -> ToyDataSection:
        shared = set(self.train_voices) & set(self.held_out_voices)
        if shared:
            raise ValueError(f"held-out voices must be unseen in training, but {sorted(shared)} are in both")
        return self


class ToyVaeSection(StrictModel):
    """A patch-only ``AutoencoderKLLTXVideo`` (spatial compression = ``patch_size``, no temporal compression).

    diffusers' LTX decoder up-samples space and time together (2x2x2 per block), so the only ways to 8x spatial
    compression are patch 4 + one block (2x temporal) or patch 8 alone; patch alone trains far better here and keeps
    every frame (docs/toy.md has the measurements).
    """

    patch_size: int = Field(default=4, ge=1)
    encoder_channels: int = Field(default=64, ge=8)
    decoder_channels: int = Field(default=64, ge=8)
    latent_channels: int = Field(default=16, ge=1)
    encoder_layers: int = Field(default=1, ge=1)
    decoder_layers: int = Field(default=2, ge=1)
    steps: int = Field(default=6000, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0, le=1)
    batch_size: int = Field(default=16, ge=1, description="crops per step")
    frames_per_crop: int = Field(default=1, ge=1, description="consecutive frames per crop")
    crop: int = Field(default=64, ge=8, description="square crop side, pixels (a multiple of patch_size)")
    mouth_crop_fraction: float = Field(default=0.5, ge=0, le=1, description="share of crops centred near the mouth")
    mouth_weight: float = Field(default=4.0, ge=1, description="loss weight of mouth pixels (the generator knows them)")
    squared_error_weight: float = Field(default=4.0, ge=0, description="loss = |e| + w e^2 (PSNR is an L2 measure)")
    kl_weight: float = Field(default=1e-5, ge=0)
    checkpoint_every: int = Field(default=250, ge=1)
    cpu_threads: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _crop_fits_patches(self) -> ToyVaeSection:
        if self.crop % self.patch_size:
            raise ValueError(f"crop {self.crop} must be a multiple of patch_size {self.patch_size}")
        return self


class ToyTransformerSection(StrictModel):
    """The image-to-video transformer: a small ``LTXVideoTransformer3DModel`` trained from scratch through the
    project's trainer (``base_config``: full training, a fixed caption instead of speech)."""

    patch_size: int = Field(default=4, ge=1, description="latent pixels per token side (4: 16x16 image pixels)")
    num_layers: int = Field(default=4, ge=1)
    num_attention_heads: int = Field(default=4, ge=1)
    attention_head_dim: int = Field(default=64, ge=8)
    caption_channels: int = Field(default=128, ge=8, description="width of the caption slot the audio tokens fill")
    base_config: ConfigPath = Field(description="the trainer YAML of the base pretraining (configs/toy-base.yaml)")
    num_frames: int = Field(default=25, ge=2, description="frames per training chunk")
    base_overrides: list[str] = Field(default_factory=list,
                                      description="section.key=value changes to base_config (e.g. a short test run)")
    continue_phases: list[list[str]] = Field(
        default_factory=list,
        description="further trainer runs, each starting from the previous run's last weights with a fresh "
        "learning-rate schedule: per phase, section.key=value changes on top of base_config + base_overrides")


class ToyPretrainConfig(StrictModel):
    """Everything ``python -m avatar_gen.toy pretrain`` does follows from this file and ``seed``."""

    seed: int = Field(default=0, ge=0)
    work_dir: ConfigPath = Field(description="intermediate files: clips, VAE checkpoints, latents, the base run")
    output: ConfigPath = Field(description="the LTXImageToVideoPipeline folder written at the end")
    data: ToyDataSection = Field(default_factory=ToyDataSection)
    vae: ToyVaeSection = Field(default_factory=ToyVaeSection)
    transformer: ToyTransformerSection

    @model_validator(mode="after")
    def _wide_enough_for_its_tokens(self) -> ToyPretrainConfig:
        # LTX's transformer maps a token (latent channels x patch^2 numbers) to its width and back with no skip: a
        # narrower width leaves the rest of the initial noise in every sample (docs/toy.md, "Transformer").
        token = self.vae.latent_channels * self.transformer.patch_size**2
        width = self.transformer.num_attention_heads * self.transformer.attention_head_dim
        if width < token:
            raise ValueError(f"the transformer's width ({self.transformer.num_attention_heads} heads x "
                             f"{self.transformer.attention_head_dim} = {width}) is narrower than its tokens "
                             f"({self.vae.latent_channels} latent channels x {self.transformer.patch_size}^2 = "
                             f"{token}): it could not remove all of the noise it samples from")
        return self
