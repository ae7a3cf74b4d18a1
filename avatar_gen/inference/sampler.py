"""One chunk of image-to-video, sampled by the project's own loop (not ``LTXImageToVideoPipeline.__call__``).

:class:`ChunkSampler` turns a chunk's caption-slot inputs (:class:`ChunkConditioning`: audio tokens, masks and the
guidance negative) into packed latents, and those into frames:

1. **What is given**: the portrait encoded by the VAE as latent frame 0 (a posterior sample drawn from the request's
   generator, normalised with the VAE's statistics, as the pipeline does it), or clean normalised latents for the
   first *m* latent frames passed by the caller (a continuation, issue 17; docs/CONTRACTS.md).
2. **Start**: Gaussian noise for the whole chunk [1, C, F', h, w] from the same generator — or, starting below pure
   noise, clean start latents (the portrait's still video) noised to the first noise level run; or, with
   ``noise_cells`` (the mouth's), those tokens from pure noise and the others held on the still's noising line until
   the schedule reaches the start level — the given frames put in place, packed into tokens with the transformer's
   patch size (:meth:`AvatarDenoiser.pack`).
3. **Schedule**: :func:`avatar_gen.model.sampling.sigma_schedule` for the chunk's latent count (or a fixed schedule),
   from the start noise level down (:func:`avatar_gen.model.sampling.start_at`; whole with ``noise_cells``).
4. **Loop**: :func:`avatar_gen.model.sampling.euler_sample` with the denoiser's velocity
   (:meth:`AvatarDenoiser.predict`: the same RoPE and mask geometry as training), classifier-free guided by the
   negative embeddings in one batch of two (at the noise levels of the guidance interval; one unguided pass at the
   others); given tokens keep timestep 0 and their values.
5. **Decode**: unpack, de-normalise, (VAEs with timestep conditioning) a little noise at a small decode timestep,
   VAE decode, uint8.

For a transformer with patch size 1 this is what the pipeline computes, to the bit (``tests/test_sampler.py``); with
larger patches the pipeline cannot run at all (docs/inference.md, "Sampling").  Torch and numpy only, so that
``python -m bench.gpu`` runs it on a machine without the media stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avatar_gen.inference.guidance import FULL_INTERVAL, check_guidance_interval
from avatar_gen.model.sampling import (
    SigmaSchedule, Velocity, check_scheduler_config, euler_sample, sigma_schedule, start_at)
from avatar_gen.utils.vae_space import denormalize_latents, frames_to_pixels, normalize_latents, pixels_to_frames


@dataclass
class ChunkConditioning:
    """The caption-slot inputs of one chunk (batch 1)."""

    prompt_embeds: torch.Tensor  # [1, tokens, caption_channels]
    prompt_attention_mask: torch.Tensor  # [1, tokens] (global) or bool [1, video tokens, tokens] (local)
    negative_prompt_embeds: torch.Tensor | None  # silence through the same encoder and projection (None: no guidance)
    negative_prompt_attention_mask: torch.Tensor | None


@dataclass(frozen=True)
class LatentGrid:
    """A chunk's latent video: ``frames`` x ``height`` x ``width`` latents (the VAE's grid), and the transformer's
    token grid over it (``patch_size_t`` x ``patch_size`` x ``patch_size`` latents per token)."""

    frames: int
    height: int
    width: int
    patch_size: int = 1
    patch_size_t: int = 1

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(frames, height, width) of the tokens: what the transformer's RoPE and the attention mask are built on."""
        return self.frames // self.patch_size_t, self.height // self.patch_size, self.width // self.patch_size

    @property
    def num_latents(self) -> int:
        """Latent positions before patching: what the schedule's dynamic shift counts (as diffusers' pipeline)."""
        return self.frames * self.height * self.width


class ChunkSampler:
    """Samples chunks for one denoiser (:class:`avatar_gen.model.denoiser.AvatarDenoiser`), VAE and scheduler config.

    Stateless between calls (the schedule is computed per call), so one sampler serves every request; all randomness
    comes from the ``generator`` each call is given.
    """

    def __init__(self, denoiser: torch.nn.Module, vae: torch.nn.Module, scheduler_config: Mapping[str, Any],
                 device: torch.device | str = "cpu"):
        check_scheduler_config(scheduler_config)
        self.denoiser, self.vae, self.scheduler_config = denoiser, vae, dict(scheduler_config)
        self.device = torch.device(device)
        self.temporal_compression = int(vae.temporal_compression_ratio)
        self.spatial_compression = int(vae.spatial_compression_ratio)
        config = denoiser.transformer.config
        self.patch_size, self.patch_size_t = int(config["patch_size"]), int(config["patch_size_t"])

    @property
    def side_multiple(self) -> int:
        """Heights and widths must be multiples of this: whole latents, and whole tokens over them."""
        return self.spatial_compression * self.patch_size

    def grid(self, num_frames: int, height: int, width: int) -> LatentGrid:
        """The latent grid of a chunk of ``num_frames`` (t k + 1) frames of ``height`` x ``width`` pixels."""
        if height % self.side_multiple or width % self.side_multiple:
            raise ValueError(f"{width}x{height} is not a multiple of {self.side_multiple} (VAE compression "
                             f"{self.spatial_compression} x transformer patch {self.patch_size})")
        if (num_frames - 1) % self.temporal_compression:
            raise ValueError(f"{num_frames} frames is not {self.temporal_compression}k + 1")
        frames = (num_frames - 1) // self.temporal_compression + 1
        if frames % self.patch_size_t:
            raise ValueError(f"{frames} latent frames do not fill temporal patches of {self.patch_size_t}")
        return LatentGrid(frames, height // self.spatial_compression, width // self.spatial_compression,
                          self.patch_size, self.patch_size_t)

    def schedule(self, grid: LatentGrid, steps: int | None, timesteps: Sequence[float] | None = None,
                 start_sigma: float = 1.0, whole: bool = False) -> SigmaSchedule:
        """The chunk's schedule: ``steps`` regular steps for its latent count, or the fixed ``timesteps``; with
        ``start_sigma`` < 1 only its steps from that noise level down (:func:`avatar_gen.model.sampling.start_at`),
        or, ``whole`` (some tokens start from pure noise: :meth:`denoise`'s ``noise_cells``), all of them once
        ``start_sigma`` is known to leave a step to run."""
        schedule = sigma_schedule(self.scheduler_config, grid.num_latents, steps, timesteps)
        tail = start_at(schedule, start_sigma)  # refuses a start below the schedule's last step either way
        return schedule if whole else tail

    @torch.no_grad()
    def encode_image(self, frame: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """uint8 [H, W, 3] -> normalised latents float32 [1, C, 1, h, w] of it as a first frame: a posterior sample
        (drawn from ``generator``, as the pipeline draws it), normalised with the VAE's statistics."""
        parameter = next(self.vae.parameters())
        pixels = frames_to_pixels(frame[None], parameter.device, parameter.dtype)[None]  # [1, 3, 1, H, W]
        raw = self.vae.encode(pixels).latent_dist.sample(generator).float()
        return normalize_latents(raw, self.vae.latents_mean, self.vae.latents_std, self.vae.config.scaling_factor)

    @torch.no_grad()
    def encode_still(self, frame: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> normalised latents float32 [1, C, 1, h, w]: the last latent frame of a still clip of
        ``frame`` (1 + t copies), with the posterior mode as training latents are encoded — a latent that stands for
        t frames, like every latent of a chunk but its first (no random number is drawn)."""
        parameter = next(self.vae.parameters())
        still = np.repeat(frame[None], 1 + self.temporal_compression, axis=0)
        pixels = frames_to_pixels(still, parameter.device, parameter.dtype)[None]  # [1, 3, 1 + t, H, W]
        raw = self.vae.encode(pixels).latent_dist.mode()[:, :, -1:].float()
        return normalize_latents(raw, self.vae.latents_mean, self.vae.latents_std, self.vae.config.scaling_factor)

    def velocity(self, inputs: ChunkConditioning, grid: LatentGrid, frame_rate: float, guidance: float,
                 guidance_interval: tuple[float, float] = FULL_INTERVAL,
                 guidance_cells: np.ndarray | None = None) -> Velocity:
        """The denoiser's velocity with the chunk's caption inputs bound; for ``guidance`` > 1 the audio
        classifier-free guidance ``uncond + guidance * (cond - uncond)``, both halves in one batch of two, at the
        steps whose noise level σ lies in ``guidance_interval`` (low, high), inclusive; the other steps take the
        conditional prediction alone, one pass instead of two (guidance in a limited interval, Kynkäänniemi et al.
        2024).  ``guidance_cells`` (bool [token rows, token columns], the chunk's token grid) limits the guidance to
        the tokens of those cells in every frame (e.g. the mouth's: :mod:`avatar_gen.inference.guidance`); the others
        take the conditional prediction of the same pass.  docs/inference.md, "Audio guidance"."""
        frames, height, width = grid.token_grid
        predict = self.denoiser.predict

        def plain(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return predict(latents, inputs.prompt_embeds, inputs.prompt_attention_mask, timestep, frames, height,
                           width, frame_rate)
        if guidance <= 1.0:
            return plain
        if inputs.negative_prompt_embeds is None or inputs.negative_prompt_attention_mask is None:
            raise ValueError(f"guidance {guidance} needs the negative embeddings and mask")
        low, high = check_guidance_interval(guidance_interval)
        guided_tokens = None if guidance_cells is None else self._cell_tokens(guidance_cells, grid, "guidance cells")
        tokens = torch.cat([inputs.negative_prompt_embeds, inputs.prompt_embeds])
        mask = torch.cat([inputs.negative_prompt_attention_mask, inputs.prompt_attention_mask])
        num_train = float(self.scheduler_config.get("num_train_timesteps", 1000))
        limited = (low, high) != FULL_INTERVAL  # (every step otherwise: no need to read σ off the device)

        def guided(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            if limited:  # the step's noise level: the free tokens' timestep (given tokens carry 0)
                sigma = float(timestep.max()) / num_train
                if not low <= sigma <= high:
                    return plain(latents, timestep)
            prediction = predict(torch.cat([latents, latents]), tokens, mask, torch.cat([timestep, timestep]),
                                 frames, height, width, frame_rate).float()
            unconditional, conditional = prediction.chunk(2)
            velocity = unconditional + guidance * (conditional - unconditional)
            return velocity if guided_tokens is None else torch.where(guided_tokens, velocity, conditional)
        return guided

    @torch.no_grad()
    def denoise(self, inputs: ChunkConditioning, num_frames: int, height: int, width: int, frame_rate: float,
                steps: int | None, guidance: float, generator: torch.Generator, image: np.ndarray | None = None,
                condition_latents: torch.Tensor | None = None, timesteps: Sequence[float] | None = None,
                on_step: Callable[[int], None] | None = None,
                guidance_interval: tuple[float, float] = FULL_INTERVAL,
                guidance_cells: np.ndarray | None = None, start_sigma: float = 1.0,
                start_latents: torch.Tensor | None = None, noise_cells: np.ndarray | None = None) -> torch.Tensor:
        """One chunk: packed, normalised latents float32 [1, tokens, C x patch volume].

        Exactly one of ``image`` (uint8 [height, width, 3], encoded as latent frame 0) or ``condition_latents``
        (clean, normalised [1, C, m, h, w] for the first m latent frames, 1 <= m < the chunk's latent frames) is
        given; its tokens stay as given, with timestep 0.  ``steps`` regular steps, or the fixed ``timesteps``.
        ``on_step(step)`` after every step.  ``guidance`` applies at the steps whose σ lies in ``guidance_interval``,
        on the tokens of ``guidance_cells`` (None: all; :meth:`velocity`).  The free latent frames start from pure
        noise, or with ``start_sigma`` < 1 from ``start_latents`` (clean, normalised [1, C, 1 or the chunk's latent
        frames, h, w]; inference gives the portrait's still latents) noised to the first noise level of the schedule
        at or below ``start_sigma``, whose steps above it are skipped (:meth:`schedule`).  ``noise_cells`` (bool
        [token rows, token columns], e.g. the mouth's; with ``start_sigma`` < 1) start from pure noise instead, in
        every free frame, and the whole schedule runs: the other free tokens stay on the still's noising line
        ``(1 - σ) still + σ noise`` (their velocity is ``noise - still``, exact for an Euler step) while σ is above
        ``start_sigma``, so that they reach the first noise level at or below it where a start from there would have
        put them, and the model moves them from there on; the noise cells are denoised by the model all along, in
        view of the rest (differential diffusion, Levin & Fried 2023).  Random numbers, in order: the image's
        posterior sample (image only), then the noise of the whole chunk, both from ``generator``.
        """
        grid = self.grid(num_frames, height, width)
        partial = noise_cells is not None and start_sigma < 1.0
        schedule = self.schedule(grid, steps, timesteps, start_sigma, whole=partial)
        if (image is None) == (condition_latents is None):
            raise ValueError("give either an image or condition_latents for the first latent frames")
        given = self.encode_image(image, generator) if image is not None else condition_latents
        channels = self.vae.config.latent_channels
        expected = (1, channels, grid.height, grid.width)
        if given.ndim != 5 or (given.shape[0], given.shape[1], *given.shape[3:]) != expected:
            raise ValueError(f"condition latents must be [1, {channels}, m, {grid.height}, {grid.width}], "
                             f"got {list(given.shape)}")
        given_frames = given.shape[2]
        if not 1 <= given_frames < grid.frames or given_frames % self.patch_size_t:
            raise ValueError(f"{given_frames} given latent frames for a chunk of {grid.frames} (give 1 to "
                             f"{grid.frames - 1}, whole temporal patches of {self.patch_size_t})")
        shape = (1, channels, grid.frames, grid.height, grid.width)
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        start = noise = self.denoiser.pack(noise.to(self.device))
        clean = torch.zeros(shape, device=self.device)
        clean[:, :, :given_frames] = given.to(self.device, torch.float32)
        frame_mask = torch.zeros((1, 1, *shape[2:]), device=self.device)
        frame_mask[:, :, :given_frames] = 1.0
        condition_mask = self.denoiser.pack(frame_mask).amax(dim=-1)  # [1, tokens]: a token is given or not
        velocity = self.velocity(inputs, grid, frame_rate, guidance, guidance_interval, guidance_cells)
        if start_sigma < 1.0:
            if start_latents is None or start_latents.ndim != 5 or start_latents.shape[2] not in (1, grid.frames) \
                    or (start_latents.shape[0], start_latents.shape[1], *start_latents.shape[3:]) != expected:
                raise ValueError(f"start latents must be [1, {channels}, 1 or {grid.frames}, {grid.height}, "
                                 f"{grid.width}] for start_sigma {start_sigma:g}, got "
                                 f"{None if start_latents is None else list(start_latents.shape)}")
            still = self.denoiser.pack(start_latents.to(self.device, torch.float32).expand(shape).contiguous())
            sigma = float(schedule.sigmas[0])  # rectified flow: x_sigma = (1 - sigma) x_0 + sigma noise
            noised_still = (1.0 - sigma) * still + sigma * noise
            if not partial:
                start = noised_still
            else:  # the noise cells from pure noise, the rest held on the still's noising line until the start level
                free = self._cell_tokens(noise_cells, grid, "noise cells")
                start = torch.where(free, noise, noised_still)
                velocity = self._held_on_line(velocity, free, noise - still,
                                              float(start_at(schedule, start_sigma).timesteps[0]))
        return euler_sample(velocity, start, schedule, clean=self.denoiser.pack(clean), condition_mask=condition_mask,
                            on_step=on_step)

    def _cell_tokens(self, cells: np.ndarray, grid: LatentGrid, what: str) -> torch.Tensor:
        """bool [token rows, token columns] -> bool [1, tokens, 1]: the same cells in every frame of the chunk (the
        pack order is frame, row, column)."""
        frames, rows, columns = grid.token_grid
        if tuple(cells.shape) != (rows, columns):
            raise ValueError(f"{what} {list(cells.shape)} for a token grid of {rows}x{columns}")
        tokens = torch.from_numpy(np.ascontiguousarray(cells, dtype=bool)).flatten().repeat(frames)
        return tokens.to(self.device)[None, :, None]

    @staticmethod
    def _held_on_line(velocity: Velocity, free: torch.Tensor, line: torch.Tensor, release_timestep: float) -> Velocity:
        """``velocity`` with the tokens outside ``free`` (bool [1, tokens, 1]) moving along ``line`` (packed
        ``noise - still``: the derivative of ``(1 - σ) still + σ noise`` in σ) at the steps whose timestep is above
        ``release_timestep`` (the first step at or below the start level; compared as the same float32 values the
        loop passes, given tokens carrying 0), the model's prediction from there on (:meth:`denoise`)."""
        def held(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            prediction = velocity(latents, timestep)
            return torch.where(free, prediction, line) if float(timestep.max()) > release_timestep else prediction
        return held

    def unpack(self, packed: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Packed latents [1, tokens, C'] of a chunk -> [1, C, F', h, w] (e.g. the last m latent frames of a chunk,
        ``unpack(...)[:, :, -m:]``, condition the next one)."""
        return self.denoiser.unpack(packed, *self.grid(num_frames, height, width).token_grid)

    @torch.no_grad()
    def decode(self, packed: torch.Tensor, num_frames: int, height: int, width: int, generator: torch.Generator,
               decode_timestep: float, decode_noise_scale: float) -> np.ndarray:
        """Packed normalised latents -> uint8 frames [num_frames, height, width, 3], as the pipeline decodes them."""
        vae = self.vae
        latents = denormalize_latents(self.unpack(packed, num_frames, height, width).float(), vae.latents_mean,
                                      vae.latents_std, vae.config.scaling_factor).to(vae.dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            # A little noise at a small decode timestep, as LTX-Video 0.9.1+ decodes (the pipeline does the same).
            noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            latents = (1 - decode_noise_scale) * latents + decode_noise_scale * noise
            timestep = torch.full((latents.shape[0],), decode_timestep, device=latents.device, dtype=latents.dtype)
        return pixels_to_frames(vae.decode(latents, timestep, return_dict=False)[0][0])  # [3, F, H, W] in [-1, 1]
