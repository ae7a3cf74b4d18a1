"""The toy VAE: a small ``AutoencoderKLLTXVideo`` trained from scratch on synthetic close-up clips.

Training sees random square crops of single frames (the model is convolutional, so crops teach it as much per pixel
as whole frames at a fraction of the cost), half of them centred near the mouth, whose pixels also weigh more in the
loss: the generator knows where the mouth is, and the mouth is what lip sync is judged on. The loss is
``|e| + w e^2`` (L1 for sharp edges, L2 because PSNR is an L2 measure) plus a very small KL term that keeps the
posterior a distribution. Per-channel ``latents_mean``/``latents_std`` are then measured on the model's own latents
of the training clips, as real LTX VAEs ship them.

The run is resumable: every ``checkpoint_every`` steps the weights, optimizer, LR schedule, step and every RNG state
go atomically into ``<work>/vae/training_state.pt``; a killed run continues from there.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avatar_gen.synthetic.figure import MOUTH_HALF_HEIGHT_RADII, MOUTH_HALF_WIDTH_RADII
from avatar_gen.toy.config import ToyVaeSection
from avatar_gen.utils.datafiles import load_tensor_file
from avatar_gen.utils.io import atomic_path
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pt"
RECONSTRUCT_CHUNK_FRAMES = 25  # frames encoded and decoded together when a whole clip is reconstructed


@dataclass
class ClipFrames:
    """One clip in memory: uint8 RGB frames [T, H, W, 3] and where its mouth is (pixels)."""

    clip_id: str
    frames: np.ndarray
    mouth_x: float
    mouth_y: float
    head_radius: float


def build_toy_vae(settings: ToyVaeSection):
    """A patch-only ``AutoencoderKLLTXVideo``: one block without up/down-sampling on each side, causal encoder."""
    from diffusers import AutoencoderKLLTXVideo

    return AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=settings.latent_channels,
        block_out_channels=(settings.encoder_channels,), decoder_block_out_channels=(settings.decoder_channels,),
        layers_per_block=(settings.encoder_layers, settings.encoder_layers),
        decoder_layers_per_block=(settings.decoder_layers, settings.decoder_layers),
        spatio_temporal_scaling=(False,), decoder_spatio_temporal_scaling=(False,),
        decoder_inject_noise=(False, False), upsample_residual=(False,), upsample_factor=(1,),
        timestep_conditioning=False, patch_size=settings.patch_size, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    )


def fold_temporal_kernels(vae) -> int:
    """Make every frame's encoding and decoding its own; returns how many convolutions were folded.

    Trained on single frames (``frames_per_crop`` 1), each 3-D convolution only ever saw its time taps applied to
    copies of one frame (LTX pads time by repeating the edge frame), so only their sum was learned.  On a clip the
    taps would mix neighbouring frames in proportions nobody trained: measured on a held-out clip, the reconstruction
    lagged the original by about two frames and lost the mouth's motion (27.7 dB against 36.8 dB frame by frame).
    Putting the sum on the tap that reads the output's own frame (the last tap of a causal convolution, the middle
    one otherwise) keeps what training taught exactly and leaves the neighbours out.
    """
    from diffusers.models.autoencoders.autoencoder_kl_ltx import LTXVideoCausalConv3d

    folded = 0
    for module in vae.modules():
        if not isinstance(module, LTXVideoCausalConv3d) or module.kernel_size[0] == 1:
            continue
        if module.conv.stride[0] != 1 or module.conv.dilation[0] != 1:
            raise ValueError("fold_temporal_kernels needs convolutions without temporal stride or dilation")
        taps = module.kernel_size[0]
        own_tap = taps - 1 if module.is_causal else (taps - 1) // 2
        with torch.no_grad():
            weight = module.conv.weight
            summed = weight.sum(dim=2)
            weight.zero_()
            weight[:, :, own_tap] = summed
        folded += 1
    return folded


def mouth_mask(height: int, width: int, top: int, left: int, clip: ClipFrames) -> np.ndarray:
    """bool [height, width]: pixels of the crop at (top, left) inside the clip's mouth box."""
    rows = np.arange(top, top + height)[:, None]
    cols = np.arange(left, left + width)[None, :]
    return ((np.abs(cols - clip.mouth_x) < MOUTH_HALF_WIDTH_RADII * clip.head_radius)
            & (np.abs(rows - clip.mouth_y) < MOUTH_HALF_HEIGHT_RADII * clip.head_radius))


class CropSampler:
    """Random training crops, from a seeded numpy generator whose state is saved with the checkpoint."""

    def __init__(self, clips: list[ClipFrames], settings: ToyVaeSection, seed: int):
        self.clips = clips
        self.settings = settings
        self.rng = np.random.default_rng(seed)

    def _corner(self, centre: float, limit: int) -> int:
        patch, crop = self.settings.patch_size, self.settings.crop
        return int(np.clip(round((centre - crop / 2) / patch) * patch, 0, limit - crop))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [B, 3, T, crop, crop] in [-1, 1] and loss weights [B, 1, 1, crop, crop]."""
        settings, crop = self.settings, self.settings.crop
        pixels, weights = [], []
        for _ in range(settings.batch_size):
            clip = self.clips[int(self.rng.integers(len(self.clips)))]
            frames, (height, width) = clip.frames, clip.frames.shape[1:3]
            start = int(self.rng.integers(0, len(frames) - settings.frames_per_crop + 1))
            if self.rng.random() < settings.mouth_crop_fraction:
                jitter = self.rng.uniform(-crop / 4, crop / 4, size=2)
                top = self._corner(clip.mouth_y + jitter[0], height)
                left = self._corner(clip.mouth_x + jitter[1], width)
            else:
                top = self._corner(self.rng.uniform(crop / 2, height - crop / 2), height)
                left = self._corner(self.rng.uniform(crop / 2, width - crop / 2), width)
            pixels.append(frames[start:start + settings.frames_per_crop, top:top + crop, left:left + crop])
            weight = np.ones((crop, crop), dtype=np.float32)
            weight[mouth_mask(crop, crop, top, left, clip)] = settings.mouth_weight
            weights.append(weight)
        pixels = torch.from_numpy(np.stack(pixels)).float().div_(127.5).sub_(1.0).permute(0, 4, 1, 2, 3)
        return pixels.contiguous(), torch.from_numpy(np.stack(weights))[:, None, None]


def lr_factor(step: int, settings: ToyVaeSection) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    done = min(1.0, (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps))
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))


def vae_loss(vae, pixels: torch.Tensor, weights: torch.Tensor, settings: ToyVaeSection) -> torch.Tensor:
    posterior = vae.encode(pixels).latent_dist
    error = vae.decode(posterior.sample()).sample - pixels
    reconstruction = ((error.abs() + settings.squared_error_weight * error.pow(2)) * weights).mean()
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    return reconstruction + settings.kl_weight * kl


def _save_state(path: Path, vae, optimizer, scheduler, step: int, sampler: CropSampler) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step, "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state()},
                   tmp)


def train_toy_vae(settings: ToyVaeSection, clips: list[ClipFrames], state_dir: Path, seed: int,
                  held_out: list[ClipFrames] | None = None):
    """Train (or resume training of) the toy VAE; returns it in eval mode. Logs held-out PSNR at checkpoints."""
    torch.manual_seed(seed)
    vae = build_toy_vae(settings).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, settings))
    sampler = CropSampler(clips, settings, seed)
    state_path = state_dir / TRAINING_STATE
    step = 0
    if state_path.is_file():
        state = load_tensor_file(state_path, "toy VAE training state")
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        log.info("toy VAE: resuming at step %d of %d", step, settings.steps)
    state_dir.mkdir(parents=True, exist_ok=True)
    with progress(total=settings.steps, desc="toy VAE", unit="step") as bar:
        bar.update(step)
        while step < settings.steps:
            pixels, weights = sampler.batch()
            loss = vae_loss(vae, pixels, weights, settings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                _save_state(state_path, vae, optimizer, scheduler, step, sampler)
                if held_out:  # on clips, so measured as the finished VAE will code them (folded, below)
                    probe = copy.deepcopy(vae).eval()
                    if settings.frames_per_crop == 1:
                        fold_temporal_kernels(probe)
                    log.info("toy VAE step %d: loss %.4f, held-out PSNR %.2f dB", step, loss.item(),
                             float(np.mean([reconstruction_psnr(probe, clip.frames) for clip in held_out[:4]])))
                    del probe
    vae = vae.eval().requires_grad_(False)
    if settings.frames_per_crop == 1:
        log.info("toy VAE: trained on single frames; %d convolutions folded to per-frame", fold_temporal_kernels(vae))
    return vae


@torch.no_grad()
def reconstruct(vae, frames: np.ndarray, chunk_frames: int = RECONSTRUCT_CHUNK_FRAMES) -> np.ndarray:
    """uint8 frames [T, H, W, 3] through encode (posterior mode) and decode, ``chunk_frames`` at a time; decoded as
    the project decodes (:func:`avatar_gen.latents.vae.decode_latents`: a timestep-conditioned VAE at timestep 0)."""
    from avatar_gen.latents.vae import decode_latents

    out = []
    for start in range(0, len(frames), chunk_frames):
        pixels = torch.from_numpy(frames[start:start + chunk_frames]).float().div(127.5).sub(1.0)
        pixels = pixels.permute(3, 0, 1, 2)[None]
        out.append(decode_latents(vae, vae.encode(pixels).latent_dist.mode())[0])
    return np.concatenate(out)


def reconstruction_psnr(vae, frames: np.ndarray) -> float:
    """PSNR (dB, 8-bit peak) of a clip's reconstruction."""
    error = reconstruct(vae, frames).astype(np.float64) - frames.astype(np.float64)
    return float(10 * np.log10(255.0**2 / max(float(np.mean(error**2)), 1e-12)))


@torch.no_grad()
def measure_latent_statistics(vae, clips: list[ClipFrames], max_frames_per_clip: int = 25) -> None:
    """Set ``vae.latents_mean``/``latents_std`` to the per-channel statistics of its posterior means."""
    sums, squares, count = None, None, 0
    for clip in clips:
        pixels = torch.from_numpy(clip.frames[:max_frames_per_clip]).float().div(127.5).sub(1.0)
        latents = vae.encode(pixels.permute(3, 0, 1, 2)[None]).latent_dist.mean.double()
        flat = latents.transpose(0, 1).reshape(latents.shape[1], -1)
        sums = flat.sum(1) if sums is None else sums + flat.sum(1)
        squares = flat.pow(2).sum(1) if squares is None else squares + flat.pow(2).sum(1)
        count += flat.shape[1]
    mean = sums / count
    std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    vae.latents_mean.copy_(mean.float())
    vae.latents_std.copy_(std.float().clamp_min(1e-3))


def offline_sync(frames: np.ndarray, audio_16k: np.ndarray, fps: float) -> float | None:
    """The evaluation's offline lip-sync score at lag 0 of uint8 frames against their speech; None without a face."""
    from avatar_gen.evaluation.faces import track_face
    from avatar_gen.evaluation.lipsync import offline_sync_at_zero

    track = track_face(frames, detect_every=2)
    return None if track is None else offline_sync_at_zero(frames, track, audio_16k, fps)


def vae_ceiling(vae, clips: list[ClipFrames], audio: dict[str, np.ndarray], fps: float) -> dict[str, object]:
    """What the VAE lets through, on held-out clips: reconstruction PSNR and the offline sync score of the
    reconstructions next to that of the originals (the most a model generating in this latent space can reach)."""
    rows = []
    for clip in progress(clips, desc="VAE ceiling", unit="clip"):
        reconstruction = reconstruct(vae, clip.frames)
        error = reconstruction.astype(np.float64) - clip.frames.astype(np.float64)
        rows.append({"clip_id": clip.clip_id, "psnr": float(10 * np.log10(255.0**2 / max(np.mean(error**2), 1e-12))),
                     "sync_original": offline_sync(clip.frames, audio[clip.clip_id], fps),
                     "sync_reconstruction": offline_sync(reconstruction, audio[clip.clip_id], fps)})

    def spread(key: str) -> dict[str, float | int | None]:
        values = [row[key] for row in rows if row[key] is not None]
        return {"mean": float(np.mean(values)) if values else None, "std": float(np.std(values)) if values else None,
                "n": len(values)}

    return {"clips": rows, "psnr": spread("psnr"), "sync_original": spread("sync_original"),
            "sync_reconstruction": spread("sync_reconstruction")}
