"""Image + speech -> talking video: :class:`AvatarGenerator` (load once, generate many).

The steps (speech, portrait, audio features, denoising with the project's own sampling loop
(:mod:`avatar_gen.inference.sampler`), decoding, writing) and why they are done so are in docs/inference.md ("What
happens"); long speech is cut into chunks by :mod:`avatar_gen.inference.schedule`.  :meth:`AvatarGenerator.stream`
yields every chunk as a playable segment while later chunks are still being made
(:mod:`avatar_gen.inference.streaming`); :meth:`AvatarGenerator.generate` is that stream without segment files.  The
same seed gives the same video: one ``torch.Generator`` seeded once draws every random number of a request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_gen.audio.tts import DEFAULT_VOICE
from avatar_gen.errors import UserError, first_line
from avatar_gen.inference.inputs import (ImageInput, SpeechInput, fit_portrait, load_portrait, load_speech,
                                         MUX_SAMPLE_RATE)
from avatar_gen.limits import (MAX_FPS, MAX_GUIDANCE, MAX_SEED, MAX_SIDE, MAX_STEPS, MAX_VIDEO_PIXELS,
                               MIN_GUIDANCE, MIN_STEPS)
from avatar_gen.inference.guidance import (FULL_INTERVAL, GuidanceRegion, check_guidance_interval,
                                          check_guidance_region, check_start_region, guidance_region, mouth_region,
                                          noise_start_region)
from avatar_gen.inference.sampler import ChunkConditioning, ChunkSampler
from avatar_gen.model.sampling import check_start_sigma
from avatar_gen.inference.schedule import (DISTILLED_GUIDANCE, DISTILLED_TIMESTEPS, ChunkPlan, check_timesteps,
                                           frames_for_duration, min_chunk_frames, plan_chunks)
from avatar_gen.inference.handoff import ColourAnchor, Handoff, continuation_latents, resolve_handoff
from avatar_gen.inference.streaming import DecodedChunk, GenerationCancelled, last_decoded_frame, stream_chunks
from avatar_gen.latents.vae import DTYPES
from avatar_gen.ltx import LTX_DECODE_NOISE_SCALE, LTX_DECODE_TIMESTEP, LTX_SPATIAL_COMPRESSION
from avatar_gen.utils.io import TMP_PREFIX
from avatar_gen.utils.memory import PeakMemory
from avatar_gen.utils.progress import progress as progress_bar

log = logging.getLogger(__name__)

DEFAULT_STEPS = 40
# Audio guidance, chosen on the toy world (docs/results.md#the-toy-world): the lowest scale at which the committed
# checkpoint's held-out lip sync clears issue 14's bar; every step above it loses the face in more frames.
DEFAULT_GUIDANCE = 3.0
# Where it applies (avatar_gen.inference.guidance): the tokens over the portrait's mouth, at every noise level.
DEFAULT_GUIDANCE_REGION = "mouth"
DEFAULT_GUIDANCE_INTERVAL = FULL_INTERVAL
# Where denoising starts (docs/inference.md "Starting from the portrait"): the free latent frames start from the
# portrait's still video noised to this level; 1 is pure noise. Which tokens start there: all but the mouth's, which
# start from pure noise, so that the portrait's closed mouth is not where they start (started from the portrait too,
# the mouths of a quarter of a fresh set of held-out figures stayed still). Chosen on the toy world's tuning set by a
# rule fixed beforehand and confirmed on three sets of held-out figures: the lowest start (the schedule's last step for
# the rest of the frame) keeps the lip sync of pure noise and brings the face nearer its portrait
# (docs/results.md, "The mouth from pure noise"). On a real base it also keeps the head as still as the portrait.
DEFAULT_START_SIGMA = 0.2
DEFAULT_START_REGION = "outside_mouth"
DEFAULT_DECODE_TIMESTEP = LTX_DECODE_TIMESTEP
DEFAULT_DECODE_NOISE_SCALE = LTX_DECODE_NOISE_SCALE
STAGES = ("speech", "audio_features", "denoising", "decoding", "writing")

ProgressCallback = Callable[[str, float], None]


@dataclass
class GenerationResult:
    """What :meth:`AvatarGenerator.generate` made.

    duration: seconds of speech (and of video, within one frame).  num_frames: frames in the MP4.
    timings: seconds per stage (``speech``, ``audio_features``, ``denoising``, ``decoding``, ``writing``), ``total``,
    and ``first_second``: from the call until the video's first second (all of a shorter one) was playable — its
    segment file written when streaming to a folder, else its frames handed to the MP4 encoder.  With overlap the
    stages run side by side, so they add up to more than ``total``.
    face_center: (x, y) in [0, 1] of the portrait where the crop was centred, None when no face was found.
    handoff: how chunks continued each other (:meth:`avatar_gen.inference.handoff.Handoff.summary`).
    chunks: one record per chunk (:func:`chunk_record`): its plan (``start``, ``num_frames``, ``lead``, ``overlap``:
    output frames ``start + lead .. start + lead + overlap - 1`` are shared with the previous chunk), the output
    frames it delivered (``first_frame``, ``frames``), its ``denoising_s``, ``decoding_s`` and ``seconds``, and
    ``peak_memory_mb`` (with ``chunk_memory=True``; kind in ``memory_kind``).  ``boundaries``: the first frame every
    chunk after the first delivered, where the video passes from one chunk to the next.  ``start_sigma``: the noise
    level denoising started at (1: pure noise); ``start_region``: with a start below 1, the tokens that started
    from pure noise instead (:meth:`GuidanceRegion.summary`; ``frame`` with its reason when no mouth was found;
    None from pure noise and when every token started from the portrait); ``steps_run``: the denoising steps run
    over all chunks.
    """

    video_path: Path
    duration: float
    num_frames: int
    height: int
    width: int
    fps: float
    seed: int
    num_chunks: int
    steps: int
    guidance: float
    speech_source: str
    face_center: tuple[float, float] | None
    timings: dict[str, float] = field(default_factory=dict)
    words: list[dict[str, Any]] = field(default_factory=list)
    handoff: dict[str, Any] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    memory_kind: str | None = None
    guidance_interval: tuple[float, float] = FULL_INTERVAL
    guidance_region: dict[str, Any] = field(default_factory=lambda: {"region": "frame"})
    start_sigma: float = 1.0
    start_region: dict[str, Any] | None = None
    steps_run: int | None = None

    @property
    def boundaries(self) -> list[int]:
        return [chunk["first_frame"] for chunk in self.chunks[1:]]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (paths as strings)."""
        return {"video_path": str(self.video_path), "duration": round(self.duration, 3), "num_frames": self.num_frames,
                "height": self.height, "width": self.width, "fps": self.fps, "seed": self.seed,
                "num_chunks": self.num_chunks, "steps": self.steps, "guidance": self.guidance,
                "guidance_interval": list(self.guidance_interval), "guidance_region": self.guidance_region,
                "start_sigma": self.start_sigma, "start_region": self.start_region, "steps_run": self.steps_run,
                "speech_source": self.speech_source, "face_center": self.face_center,
                "timings": {stage: round(seconds, 3) for stage, seconds in self.timings.items()},
                "handoff": self.handoff, "boundaries": self.boundaries, "chunks": self.chunks,
                "memory_kind": self.memory_kind}


def chunk_record(chunk: DecodedChunk) -> dict[str, Any]:
    """What one chunk did, for :attr:`GenerationResult.chunks` and :attr:`Segment.chunk` (JSON-friendly)."""
    plan = chunk.plan
    denoising, decoding = chunk.seconds["denoising"], chunk.seconds["decoding"]
    return {"index": chunk.index, "start": plan.start, "num_frames": plan.num_frames, "lead": plan.lead,
            "overlap": plan.overlap, "first_frame": chunk.start_frame, "frames": len(chunk.frames),
            "denoising_s": round(denoising, 4), "decoding_s": round(decoding, 4),
            "seconds": round(denoising + decoding, 4),
            "peak_memory_mb": None if chunk.peak_memory_mb is None else round(chunk.peak_memory_mb, 1)}


@dataclass
class Segment:
    """A playable piece of a streamed generation: one chunk's new frames (see :meth:`AvatarGenerator.stream`).

    frames: uint8 [num_frames, H, W, 3], output frames ``start_frame .. start_frame + num_frames - 1``.
    path: ``segment_NNNN.mp4`` (H.264 + the segment's slice of the speech as AAC) when a segment folder was given.
    result: on the last segment only, the finished request (its MP4 is complete).
    chunk: the chunk's record (:func:`chunk_record`: its plan, seconds and peak memory).
    """

    index: int
    start_frame: int
    num_frames: int
    fps: float
    frames: np.ndarray
    path: Path | None = None
    result: GenerationResult | None = None
    chunk: dict[str, Any] | None = None

    @property
    def start_time(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_time(self) -> float:
        return (self.start_frame + self.num_frames) / self.fps


SEGMENT_PATTERN = "segment_{index:04d}.mp4"
# Chunks of frames waiting for the final MP4's encoder (each one chunk of uint8 frames in memory).
MAX_CHUNKS_QUEUED = 4


class SegmentWriter:
    """Writes each streamed chunk as ``segment_NNNN.mp4`` in ``folder``, with its slice of the speech.

    A segment's audio is the speech from its first frame's time to its last frame's end (the last segment: to the
    end of the speech), so the segments played in turn give the whole speech.  Segment files of an earlier request
    in the same folder are removed first, so the folder never mixes two requests.
    """

    def __init__(self, folder: str | os.PathLike, fps: float, audio_mux: np.ndarray, sample_rate: int,
                 total_frames: int, write: Callable[[Path, np.ndarray, float, np.ndarray], Path]):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"segment folder {self.folder} is a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("segment_*.mp4"):
            stale.unlink()
        self.fps, self.audio, self.sample_rate, self.total_frames = fps, audio_mux, sample_rate, total_frames
        self._write = write

    def audio_slice(self, start_frame: int, end_frame: int) -> np.ndarray:
        first = int(round(start_frame / self.fps * self.sample_rate))
        last = (len(self.audio) if end_frame >= self.total_frames
                else int(round(end_frame / self.fps * self.sample_rate)))
        return self.audio[first:last]

    def write(self, chunk: DecodedChunk) -> Path:
        path = self.folder / SEGMENT_PATTERN.format(index=chunk.index)
        return self._write(path, chunk.frames, self.fps, self.audio_slice(chunk.start_frame, chunk.end_frame))


class _BackgroundVideoWriter:
    """The final MP4, encoded while the chunks arrive: ``write(output, frames, fps, audio)`` runs in a thread and
    takes the frames from a queue, so ffmpeg encodes chunk ``k`` while chunk ``k + 1`` is generated.  The queue holds
    at most :data:`MAX_CHUNKS_QUEUED` chunks: an encoder slower than the generation makes it wait instead of letting
    frames pile up in memory over a long video."""

    _END = None

    def __init__(self, output: Path, fps: float, audio_mux: np.ndarray,
                 write: Callable[[Path, Iterable[np.ndarray], float, np.ndarray], Path]):
        self._chunks: queue.Queue = queue.Queue(maxsize=MAX_CHUNKS_QUEUED)
        self._error: BaseException | None = None
        self.num_frames = 0
        self._thread = threading.Thread(target=self._run, args=(write, output, fps, audio_mux),
                                        name="avatar-mp4-writer", daemon=True)
        self._thread.start()

    def _frames(self) -> Iterator[np.ndarray]:
        while True:
            chunk = self._chunks.get()
            if chunk is self._END:
                return
            if isinstance(chunk, BaseException):
                raise chunk  # write_video kills ffmpeg and leaves nothing at the output
            yield from chunk

    def _run(self, write, output, fps, audio_mux) -> None:
        try:
            write(output, self._frames(), fps, audio_mux)
        except BaseException as exc:  # re-raised by close() in the caller's thread
            self._error = exc

    def add(self, frames: np.ndarray) -> None:
        self.num_frames += len(frames)
        self._put(frames)

    def _put(self, item) -> None:
        """Queue ``item``, waiting for room while the encoder runs (a dead encoder's error surfaces in close())."""
        while self._thread.is_alive():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> int:
        """Wait for the MP4 to be complete; returns its frame count (raises what the writer raised)."""
        self._put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.num_frames

    def abort(self) -> None:
        """Stop the encoder and leave nothing at the output."""
        self._put(GenerationCancelled("generation stopped"))
        self._thread.join()


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but this machine has no usable CUDA GPU")
    return resolved


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def check_output_path(output: str | os.PathLike) -> Path:
    """The output path; UserError unless it names an ``.mp4`` file that is not a folder, in a folder we can write
    (checked by creating and removing a temporary file there, so a read-only or special folder such as ``/proc``
    fails before any generating)."""
    path = Path(output)
    if path.suffix.lower() != ".mp4":
        raise UserError(f"output must be an .mp4 file, got {path}")
    if path.is_dir():
        raise UserError(f"output {path} is a folder")
    folder = path.absolute().parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the writer creates the missing folders below the nearest existing one
    if not existing.is_dir():
        raise UserError(f"cannot write {path}: {existing} is not a folder")
    if existing == folder:
        try:
            with tempfile.NamedTemporaryFile(prefix=f"{TMP_PREFIX}probe-", dir=folder):
                pass
        except OSError as exc:
            raise UserError(f"cannot write {path}: the folder {folder} does not take new files "
                            f"({exc.strerror or exc})") from None
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: no permission to create folders in {existing}")
    return path


def check_video_pixels(num_frames: int, height: int, width: int) -> None:
    """UserError when a video of ``num_frames`` frames of ``height`` x ``width`` exceeds :data:`MAX_VIDEO_PIXELS`."""
    if num_frames * height * width > MAX_VIDEO_PIXELS:
        raise UserError(f"the video would be {num_frames} frames of {width}x{height} "
                        f"({num_frames * height * width / 1e9:.2f} gigapixels; the limit is "
                        f"{MAX_VIDEO_PIXELS / 1e9:.2f}): use shorter speech, a lower fps or a smaller size")


def check_seed(seed: Any) -> int:
    """The seed as an int; UserError unless it is a whole number in [0, MAX_SEED] (what torch.Generator takes)."""
    whole = isinstance(seed, (int, np.integer)) or (isinstance(seed, float) and seed.is_integer())
    if isinstance(seed, bool) or not whole:
        raise UserError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise UserError(f"seed must be from 0 to {MAX_SEED} (64 bits), got {int(seed)}")
    return int(seed)


def checkpoint_side_multiple(checkpoint: str | os.PathLike) -> int:
    """What heights and widths must be multiples of for ``checkpoint``, from its metadata alone (a check before the
    model loads): its VAE's spatial compression x its transformer's patch size, so that the video has whole latents
    and whole tokens (LTX-Video: 32 x 1).  LTX's 32 when the metadata cannot be read (loading it then says why)."""
    from avatar_gen.model.checkpoint import read_checkpoint_metadata, resolve_checkpoint

    try:
        metadata = read_checkpoint_metadata(resolve_checkpoint(checkpoint))
        spatial = int(metadata.get("spatial_compression") or LTX_SPATIAL_COMPRESSION)
        multiple = spatial * int((metadata.get("transformer_config") or {}).get("patch_size") or 1)
    except (UserError, TypeError, ValueError, AttributeError):
        return LTX_SPATIAL_COMPRESSION
    return multiple if multiple > 0 else LTX_SPATIAL_COMPRESSION


@dataclass(frozen=True)
class GenerationSettings:
    """Checked sampling settings of one request (``timesteps`` None = the regular schedule)."""

    steps: int
    guidance: float
    height: int | None
    width: int | None
    fps: float | None
    timesteps: list[float] | None
    seed: int = 0
    guidance_interval: tuple[float, float] = FULL_INTERVAL
    guidance_region: str = DEFAULT_GUIDANCE_REGION
    start_sigma: float = DEFAULT_START_SIGMA
    start_region: str = DEFAULT_START_REGION


def resolve_settings(steps: int | None = None, guidance: float | None = None, height: int | None = None,
                     width: int | None = None, fps: float | None = None, distilled: bool = False,
                     timesteps: Sequence[float] | None = None, spatial_multiple: int = LTX_SPATIAL_COMPRESSION,
                     seed: Any = 0, guidance_interval: Sequence[float] | None = None,
                     guidance_region: str | None = None, start_sigma: float | None = None,
                     start_region: str | None = None) -> GenerationSettings:
    """Check and complete the sampling settings; None height/width/fps stay None (the model's defaults apply).

    A fixed schedule (``timesteps``, or :data:`DISTILLED_TIMESTEPS` with ``distilled``) sets the number of steps and
    makes guidance default to 1 and ``start_sigma`` to 1 (the whole schedule).  ``guidance_interval`` (low, high):
    the noise levels at which guidance applies (default :data:`DEFAULT_GUIDANCE_INTERVAL`); ``guidance_region``:
    ``mouth`` or ``frame``, the tokens it applies to (default :data:`DEFAULT_GUIDANCE_REGION`;
    :mod:`avatar_gen.inference.guidance`); ``start_sigma`` in (0, 1]: the noise level denoising starts from, over the
    portrait's still video (default :data:`DEFAULT_START_SIGMA`; 1: pure noise); ``start_region``
    ``outside_mouth`` or ``frame``, the tokens that start there (default :data:`DEFAULT_START_REGION`).  Raises
    UserError for values the model cannot use and for values beyond the bounds of :mod:`avatar_gen.limits` (checked
    here, before anything is allocated for them).
    """
    for name, value in (("height", height), ("width", width)):
        if value is not None and (int(value) < spatial_multiple or int(value) % spatial_multiple):
            raise UserError(f"height and width must be positive multiples of {spatial_multiple}, got {name} {value}")
        if value is not None and int(value) > MAX_SIDE:
            raise UserError(f"{name} {value} is above the limit of {MAX_SIDE} px")
    if fps is not None and not 0 < float(fps) <= MAX_FPS:
        raise UserError(f"fps must be in (0, {MAX_FPS:.0f}], got {fps}")
    if timesteps is None and distilled:
        timesteps = DISTILLED_TIMESTEPS
    if timesteps is not None:
        if len(timesteps) > MAX_STEPS:
            raise UserError(f"a fixed schedule of {len(timesteps)} timesteps is above the limit of {MAX_STEPS} steps")
        timesteps = check_timesteps(timesteps)
        steps = len(timesteps)
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if steps > MAX_STEPS:
        raise UserError(f"steps must be at most {MAX_STEPS}, got {steps}")
    if timesteps is None and steps < MIN_STEPS:
        # The pipeline's 1-step schedule is sigma [1.0], which the scheduler's shift_terminal stretch divides by
        # zero; a one-step fixed schedule (timesteps=[1000]) works.
        raise UserError(f"steps must be at least {MIN_STEPS} (for one step give a fixed schedule: --timesteps 1000)"
                        f", got {steps}")
    if guidance is None:
        guidance = DISTILLED_GUIDANCE if timesteps is not None else DEFAULT_GUIDANCE
    guidance = float(guidance)
    if not MIN_GUIDANCE <= guidance <= MAX_GUIDANCE:
        raise UserError(f"guidance must be in [{MIN_GUIDANCE:g}, {MAX_GUIDANCE:g}] (1 = no classifier-free guidance), "
                        f"got {guidance}")
    try:
        interval = check_guidance_interval(DEFAULT_GUIDANCE_INTERVAL if guidance_interval is None
                                           else guidance_interval)
        region = check_guidance_region(DEFAULT_GUIDANCE_REGION if guidance_region is None else guidance_region)
        start_tokens = check_start_region(DEFAULT_START_REGION if start_region is None else start_region)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if start_sigma is None:
        # a fixed schedule (a distilled model's) was made to run whole: its last steps alone would be one or two
        start_sigma = 1.0 if timesteps is not None else DEFAULT_START_SIGMA
    try:
        start = check_start_sigma(start_sigma)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return GenerationSettings(steps=steps, guidance=guidance, height=None if height is None else int(height),
                              width=None if width is None else int(width), fps=None if fps is None else float(fps),
                              timesteps=timesteps, seed=check_seed(seed), guidance_interval=interval,
                              guidance_region=region, start_sigma=start, start_region=start_tokens)


class _StageClock:
    """Accumulates seconds per stage and reports stage progress to the caller's callback."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback
        self.timings = {stage: 0.0 for stage in STAGES}

    def report(self, stage: str, fraction: float) -> None:
        if self.callback is not None:
            self.callback(stage, min(max(float(fraction), 0.0), 1.0))

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the block's wall time to ``stage`` (no progress report: stages run in several pieces)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - started

    def run(self, stage: str, work: Callable[[], Any]) -> Any:
        """Run a one-piece stage: report 0, time it, report 1."""
        self.report(stage, 0.0)
        with self.timed(stage):
            result = work()
        self.report(stage, 1.0)
        return result


class AvatarGenerator:
    """A trained avatar model ready to generate; build it with :meth:`load` and reuse it for many requests.

    One generation runs at a time per instance (a lock serialises concurrent calls, e.g. from a web server).
    """

    def __init__(self, checkpoint, vae, scheduler_config: dict[str, Any], audio_encoder, device: torch.device,
                 dtype: torch.dtype, base_model: str):
        self.checkpoint = checkpoint
        self.metadata = checkpoint.metadata
        self.device = device
        self.dtype = dtype
        self.base_model = base_model
        self.audio_encoder = audio_encoder
        self.audio_projection = checkpoint.audio_projection
        self.denoiser = checkpoint.denoiser(vae.temporal_compression_ratio, vae.spatial_compression_ratio)
        self.vae = vae
        self.transformer = checkpoint.transformer
        self.sampler = ChunkSampler(self.denoiser, vae, scheduler_config, device)
        video = self.metadata.get("video") or {}
        self.default_height = int(video.get("height", 512))
        self.default_width = int(video.get("width", 768))
        self.default_fps = float(video.get("fps", 25.0))
        # Chunks as long as the training clips, but never more frames than the projection has frame embeddings for.
        temporal = vae.temporal_compression_ratio
        longest = (checkpoint.audio_projection.config.max_frames - 1) // temporal * temporal + 1
        self.chunk_frames = min(int(video.get("num_frames", 121)), longest)
        if self.chunk_frames < min_chunk_frames(temporal):
            raise UserError(f"checkpoint {checkpoint.path}: chunks of {self.chunk_frames} frames are too short to "
                            f"generate (audio projection max_tokens {checkpoint.audio_projection.config.max_tokens})")
        self._lock = threading.Lock()
        self._warned_given_frames: set[int] = set()
        self._silence: dict[tuple[int, float], np.ndarray] = {}

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, pretrained: str | os.PathLike | None = None,
             device: str | torch.device = "cpu", dtype: str = "fp32", attention_backend: str | None = None,
             compile: bool = False, fp8: bool = False, vae_tiling: bool = False) -> AvatarGenerator:
        """Load a training checkpoint and everything around it.

        ``checkpoint``: a ``step_XXXXXX`` folder, a ``latest`` link, or a run's (``checkpoints``) folder.
        ``pretrained``: the base LTX-Video pipeline (hub id or folder) for the VAE, the scheduler and, for a LoRA
        checkpoint, the transformer; default: the one recorded in the checkpoint.  ``dtype``: ``fp32`` or ``bf16``.
        Speed options (:mod:`avatar_gen.inference.speed`): ``attention_backend`` (diffusers' dispatcher name),
        ``compile`` (``torch.compile`` of the transformer), ``fp8`` (FP8 weights, GPUs with compute capability
        8.9+ and torchao), ``vae_tiling`` (tiled decoding for large sizes).
        Raises UserError for missing or corrupt files, for a checkpoint that does not fit the base model and for a
        speed option this machine cannot run.
        """
        from avatar_gen.inference import speed

        from avatar_gen.audio.features import AudioEncoderSpec, load_audio_encoder
        from avatar_gen.latents.vae import load_vae, vae_compression
        from avatar_gen.model.checkpoint import load_avatar_checkpoint, read_checkpoint_metadata, resolve_checkpoint

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype)
        folder = resolve_checkpoint(checkpoint)
        metadata = read_checkpoint_metadata(folder)
        base = str(pretrained or (metadata.get("base_model") or {}).get("pretrained") or "")
        if not base:
            raise UserError(f"checkpoint {folder} names no base model: pass pretrained (--pretrained)")
        revision = None if pretrained else (metadata.get("base_model") or {}).get("revision")
        try:
            loaded = load_avatar_checkpoint(folder, pretrained=pretrained, device=torch_device, dtype=torch_dtype)
        except (OSError, RuntimeError, ValueError) as exc:
            # safetensors / torch refuse truncated or corrupt weight files with these; the message names the file.
            raise UserError(f"checkpoint {folder} could not be loaded (corrupt or incomplete?): "
                            f"{first_line(exc)}") from None
        vae = load_vae(base, revision=revision, dtype=dtype, device=torch_device).vae
        config = loaded.transformer.config
        in_channels, patch_volume = config["in_channels"], config["patch_size"] ** 2 * config["patch_size_t"]
        if vae.config.latent_channels * patch_volume != in_channels:
            raise UserError(f"checkpoint {folder} does not match the base model {base}: its transformer takes "
                            f"{in_channels} channels per token ({patch_volume} latents per token), the VAE makes "
                            f"{vae.config.latent_channels} latent channels")
        recorded = (metadata.get("temporal_compression"), metadata.get("spatial_compression"))
        if None not in recorded and tuple(recorded) != vae_compression(vae):
            raise UserError(f"checkpoint {folder} was trained on latents of a VAE compressing {recorded[1]}x in space "
                            f"and {recorded[0]}x in time; the VAE of {base} compresses "
                            f"{vae_compression(vae)[1]}x and {vae_compression(vae)[0]}x")
        _warn_if_other_vae(metadata, vae, folder, base)
        scheduler_config = load_scheduler_config(base, revision)
        spec_dict = metadata.get("audio_encoder")
        if not spec_dict:
            raise UserError(f"checkpoint {folder} records no audio_encoder: cannot rebuild its speech features")
        spec = AudioEncoderSpec.model_validate(spec_dict)
        audio_encoder = load_audio_encoder(spec, device=torch_device, dtype=torch_dtype)
        feature_dim = loaded.audio_projection.config.feature_dim
        if audio_encoder.feature_dim != feature_dim:
            raise UserError(f"checkpoint {folder}: the audio encoder {spec.name_or_path} gives "
                            f"{audio_encoder.feature_dim}-d features, the audio projection expects {feature_dim}")
        log.info("loaded checkpoint %s (step %s, %s, alignment %s) on base %s, %s on %s", folder,
                 metadata.get("step"), metadata.get("transformer_training"), loaded.alignment, base, dtype,
                 torch_device)
        if fp8:
            speed.quantize_fp8(loaded.transformer, torch_device)
        if attention_backend is not None:
            speed.set_attention_backend(loaded.transformer, attention_backend)
        if compile:
            speed.compile_transformer(loaded.transformer)
        if vae_tiling:
            speed.enable_vae_tiling(vae)
        return cls(loaded, vae, scheduler_config, audio_encoder, torch_device, torch_dtype, base)

    # ------------------------------------------------------------------------------------------ generating

    def generate(self, image: ImageInput, text: str | None = None, audio: str | os.PathLike | None = None,
                 output: str | os.PathLike = "talking.mp4", tts: str = "espeak", voice: str = DEFAULT_VOICE,
                 steps: int | None = None, guidance: float | None = None, seed: int = 0, height: int | None = None,
                 width: int | None = None, fps: float | None = None, distilled: bool = False,
                 timesteps: Sequence[float] | None = None, progress: ProgressCallback | None = None,
                 decode_timestep: float = DEFAULT_DECODE_TIMESTEP,
                 decode_noise_scale: float = DEFAULT_DECODE_NOISE_SCALE, overlap: bool = True, handoff: str = "auto",
                 handoff_frames: int | None = None, anchor: str = "auto", chunk_memory: bool = False,
                 guidance_interval: Sequence[float] | None = None,
                 guidance_region: str | None = None, start_sigma: float | None = None,
                 start_region: str | None = None) -> GenerationResult:
        """Make ``output`` (MP4: H.264 + AAC) of the person in ``image`` speaking ``text`` (or ``audio``).

        steps: denoising steps (default 40; ignored with a fixed schedule).  guidance: audio classifier-free guidance
        scale, 1 = off (default :data:`DEFAULT_GUIDANCE`, or 1 with ``distilled``); ``guidance_interval`` (low, high):
        the noise levels σ at which it applies (default :data:`DEFAULT_GUIDANCE_INTERVAL`); ``guidance_region``
        ``mouth`` (the tokens over the portrait's mouth; the whole frame when no face is found) or ``frame`` (default
        :data:`DEFAULT_GUIDANCE_REGION`; :mod:`avatar_gen.inference.guidance`).  start_sigma (0, 1]: the noise level
        denoising starts at, from the portrait's still video (default :data:`DEFAULT_START_SIGMA`; 1 = pure noise);
        ``start_region`` ``outside_mouth`` (the mouth's tokens start from pure noise and the whole schedule runs;
        every token from pure noise when no face is found) or ``frame`` (every token from the portrait; the steps of
        the ``steps``-step schedule above the start are skipped) (default :data:`DEFAULT_START_REGION`).
        height/width (multiples of 32) and fps default to the training video's.  distilled: sample with
        :data:`DISTILLED_TIMESTEPS`; ``timesteps`` gives another fixed schedule (decreasing values in (0, 1000]).
        progress: ``callback(stage, fraction)`` with stages ``speech, audio_features, denoising, decoding, writing``
        (denoising reports every step).
        overlap: encode each finished chunk into the MP4 while the next one is denoised (see :meth:`stream`).
        Long speech (:mod:`avatar_gen.inference.handoff`): ``handoff`` ``latent`` continues each chunk from the
        previous one's last ``handoff_frames`` latent frames (default: the checkpoint's ``continuation_max_frames``),
        ``frame`` from its decoded last frame, ``auto`` (default) takes ``latent`` for a checkpoint trained to continue;
        ``anchor`` ``portrait`` or ``statistics`` keeps the portrait in view of every chunk (latent hand-off only);
        ``auto`` (default) is ``portrait`` with the latent hand-off where the chunks leave it room, else ``none``.
        chunk_memory: record each chunk's peak memory in ``result.chunks`` (resets the process's peak-memory
        counters: CUDA's peak statistics, the peak resident set).
        Raises UserError for bad input; nothing is written at ``output`` unless the whole video is made.

        This is :meth:`stream` without segment files, so the MP4 is the one a streamed request writes.
        """
        segment = None
        for segment in self.stream(  # noqa: B007 - the last segment carries the result
                image, text=text, audio=audio, output=output, tts=tts, voice=voice, steps=steps, guidance=guidance,
                seed=seed, height=height, width=width, fps=fps, distilled=distilled, timesteps=timesteps,
                progress=progress, decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale,
                overlap=overlap, handoff=handoff, handoff_frames=handoff_frames, anchor=anchor,
                chunk_memory=chunk_memory, guidance_interval=guidance_interval, guidance_region=guidance_region,
                start_sigma=start_sigma, start_region=start_region):
            pass
        return segment.result

    def stream(self, image: ImageInput, text: str | None = None, audio: str | os.PathLike | None = None,
               output: str | os.PathLike = "talking.mp4", segment_dir: str | os.PathLike | None = None,
               tts: str = "espeak", voice: str = DEFAULT_VOICE, steps: int | None = None,
               guidance: float | None = None, seed: int = 0, height: int | None = None, width: int | None = None,
               fps: float | None = None, distilled: bool = False, timesteps: Sequence[float] | None = None,
               progress: ProgressCallback | None = None, decode_timestep: float = DEFAULT_DECODE_TIMESTEP,
               decode_noise_scale: float = DEFAULT_DECODE_NOISE_SCALE, overlap: bool = True, handoff: str = "auto",
               handoff_frames: int | None = None, anchor: str = "auto", chunk_memory: bool = False,
               guidance_interval: Sequence[float] | None = None,
               guidance_region: str | None = None, start_sigma: float | None = None,
               start_region: str | None = None) -> Iterator[Segment]:
        """Generate as :meth:`generate` does, yielding every chunk's frames as a :class:`Segment` once it is playable.

        With ``segment_dir`` each segment is also written there as ``segment_NNNN.mp4`` (H.264 + its slice of the
        speech as AAC), a file a player can show at once; without it segments carry their frames only.  The last
        segment comes after ``output`` is complete and carries the :class:`GenerationResult` (``result``).  The
        final MP4 is the same, frame for frame, as :meth:`generate`'s for the same inputs and seed.

        overlap: run the denoising loop in a worker thread, so that segment ``k`` is encoded (and the final MP4's
        encoder fed) while chunk ``k + 1`` is denoised (:mod:`avatar_gen.inference.streaming`); False runs every
        stage in turn and writes the final MP4 at the end.  Work starts at the first ``next()``; closing the
        iterator early stops the generation at the next denoising step and leaves nothing at ``output``.
        """
        started = time.perf_counter()
        output = check_output_path(output)
        settings = self._settings(steps, guidance, height, width, fps, distilled, timesteps, seed, guidance_interval,
                                  guidance_region, start_sigma, start_region)
        continuation = self.resolve_handoff(handoff, handoff_frames, anchor)
        portrait = load_portrait(image)
        with self._lock, contextlib.closing(self._stream(
                portrait, text, audio, output, segment_dir, tts, voice, settings, settings.seed, progress,
                decode_timestep, decode_noise_scale, overlap, started, continuation, chunk_memory)) as segments:
            segment = None
            for segment in segments:
                if segment.result is not None:
                    segment.result.timings["total"] = time.perf_counter() - started
                yield segment
        log.info("wrote %s (%d frames, %.2f s) in %.1f s", output, segment.result.num_frames,
                 segment.result.duration, segment.result.timings["total"])

    def _settings(self, steps, guidance, height, width, fps, distilled, timesteps, seed, guidance_interval=None,
                  guidance_region=None, start_sigma=None, start_region=None) -> GenerationSettings:
        settings = resolve_settings(steps, guidance, height or self.default_height, width or self.default_width,
                                    fps or self.default_fps, distilled, timesteps,
                                    spatial_multiple=self.sampler.side_multiple, seed=seed,
                                    guidance_interval=guidance_interval, guidance_region=guidance_region,
                                    start_sigma=start_sigma, start_region=start_region)
        if settings.fps != self.default_fps:
            log.warning("generating at %.3g fps, the model was trained at %.3g fps", settings.fps, self.default_fps)
        return settings

    def resolve_handoff(self, handoff: str = "auto", handoff_frames: int | None = None,
                        anchor: str = "auto") -> Handoff:
        """The hand-off options checked against this checkpoint (:func:`avatar_gen.inference.handoff.resolve_handoff`:
        its ``continuation_max_frames``, its chunk length and patch size)."""
        return resolve_handoff(handoff, handoff_frames, anchor,
                               trained_frames=int(self.metadata.get("continuation_max_frames") or 0),
                               chunk_latent_frames=(self.chunk_frames - 1) // self.sampler.temporal_compression + 1,
                               patch_size_t=self.sampler.patch_size_t)

    def regions(self, settings: GenerationSettings,
                first_frame: np.ndarray) -> tuple[GuidanceRegion, GuidanceRegion | None]:
        """A request's token regions on this model's token grid, from the first frame as the video shows it
        (:mod:`avatar_gen.inference.guidance`; the mouth is looked for once): the tokens its guidance applies to
        (all of them without guidance), and, starting below pure noise, those that start from pure noise instead
        (None: none of them, every token starts from the portrait)."""
        tokens_side = self.sampler.side_multiple  # pixels per token side
        grid = (first_frame, settings.height // tokens_side, settings.width // tokens_side)
        guided_mouth = settings.guidance > 1.0 and settings.guidance_region == "mouth"
        partial_start = settings.start_sigma < 1.0 and settings.start_region == "outside_mouth"
        mouth = mouth_region(*grid) if guided_mouth or partial_start else None
        guided = guidance_region(settings.guidance_region, *grid, mouth=mouth) if settings.guidance > 1.0 \
            else GuidanceRegion(region="frame", reason="no guidance")
        from_noise = noise_start_region(settings.start_region, *grid, mouth=mouth) if settings.start_sigma < 1.0 \
            else None
        return guided, from_noise

    def _stream(self, portrait: np.ndarray, text: str | None, audio, output: Path,
                segment_dir: str | os.PathLike | None, tts: str, voice: str, settings: GenerationSettings, seed: int,
                progress: ProgressCallback | None, decode_timestep: float, decode_noise_scale: float, overlap: bool,
                started: float, continuation: Handoff, chunk_memory: bool) -> Iterator[Segment]:
        steps, guidance, height, width, fps = (settings.steps, settings.guidance, settings.height, settings.width,
                                               settings.fps)
        clock = _StageClock(progress)
        speech: SpeechInput = clock.run("speech", lambda: load_speech(text, audio, tts=tts, voice=voice, fps=fps))
        total_frames = frames_for_duration(speech.duration, fps)
        check_video_pixels(total_frames, height, width)
        chunks = plan_chunks(total_frames, self.chunk_frames, self.sampler.temporal_compression,
                             continuation.given_latent_frames, continuation.lead_frames)
        first_frame, center = fit_portrait(portrait, height, width)
        region, from_noise = self.regions(settings, first_frame)
        noise_cells = None if from_noise is None else from_noise.cells
        steps_of_length: dict[int, int] = {}  # chunk frames -> steps run (from the start noise level down)
        for num_frames in sorted({chunk.num_frames for chunk in chunks}):  # a schedule that cannot run: say so now
            try:
                steps_of_length[num_frames] = self.sampler.schedule(
                    self.sampler.grid(num_frames, height, width), steps, settings.timesteps,
                    settings.start_sigma, whole=noise_cells is not None).num_steps
            except ValueError as exc:
                raise UserError(f"cannot sample {width}x{height} video in chunks of {num_frames} frames: "
                                f"{first_line(exc)}") from None
        chunk_steps = [steps_of_length[chunk.num_frames] for chunk in chunks]
        start = settings.start_sigma
        start_text = ("from pure noise" if start >= 1.0 else f"from the portrait at sigma {start:g}"
                      if from_noise is None else f"from the portrait at sigma {start:g}, the mouth from pure noise"
                      if from_noise.region == "mouth" else f"from pure noise (start {start:g} asked; no mouth found)")
        log.info("%.2f s of speech -> %d frames at %g fps, %dx%d, %d chunk(s) of <= %d frames, %d steps %s, "
                 "guidance %g at sigma %g-%g on the %s, hand-off %s", speech.duration, total_frames, fps, width, height,
                 len(chunks), self.chunk_frames, chunk_steps[0], start_text, guidance, *settings.guidance_interval,
                 region.region, continuation.summary())
        segments = SegmentWriter(segment_dir, fps, speech.audio_mux, MUX_SAMPLE_RATE, total_frames, self.write) \
            if segment_dir is not None else None

        # The features of the whole speech now (one encoder pass); each chunk's projection when the chunk starts, so
        # that the device holds one chunk's audio tokens at a time however long the speech is.
        features = clock.run("audio_features", lambda: self.chunk_features(speech.audio_16k, chunks, fps))
        conditioning = _LazyConditioning(self, features, chunks, fps, height, width, negative=guidance > 1.0)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        total_steps = sum(chunk_steps)
        steps_before = np.cumsum([0, *chunk_steps]).tolist()  # steps of the chunks before each one
        first_second = min(total_frames, max(1, int(round(fps))))  # frames of the first playable second
        final = _BackgroundVideoWriter(output, fps, speech.audio_mux, self.write) if overlap else None
        frames: list[np.ndarray] = []
        records: list[dict[str, Any]] = []
        memory = PeakMemory(self.device) if chunk_memory else None
        portrait_latents: list[torch.Tensor] = []  # chunk 0's encoded portrait: the portrait anchor
        # the portrait's still video as one latent frame: where denoising starts below pure noise, and the statistics
        # anchor's reference (made when first needed)
        still: list[torch.Tensor] = []
        colour_anchor = ColourAnchor() if continuation.matches_colour else None  # chunk 0's colour for the rest
        clock.report("denoising", 0.0)
        try:
            with progress_bar(total=total_steps, desc="denoising", unit="step") as bar:
                def on_step(chunk_index: int, step: int) -> None:
                    bar.update(1)
                    clock.report("denoising", (steps_before[chunk_index] + step + 1) / total_steps)

                def denoise(index, condition, inputs, plan, step_done):
                    if index == 0 and continuation.mode == "latent":
                        # The portrait as the image path encodes it (the same random draw, so chunk 0 is the same
                        # with either hand-off), kept for the anchor.
                        portrait_latents.append(self.sampler.encode_image(condition, generator))
                        condition = portrait_latents[0]
                    image = condition if isinstance(condition, np.ndarray) else None
                    if settings.start_sigma < 1.0 and not still:
                        still.append(self.sampler.encode_still(first_frame))
                    return self.denoise(image, inputs, plan.num_frames, height, width, fps, steps, guidance,
                                        generator, on_step=step_done, timesteps=settings.timesteps,
                                        condition_latents=None if image is not None else condition,
                                        guidance_interval=settings.guidance_interval, guidance_cells=region.cells,
                                        start_sigma=settings.start_sigma,
                                        start_latents=still[0] if settings.start_sigma < 1.0 else None,
                                        noise_cells=noise_cells)

                def hand_over(latents, chunk_frames, plan):
                    if continuation.mode == "frame":
                        return last_decoded_frame(latents, chunk_frames, plan)
                    if continuation.matches_statistics and not still:
                        still.append(self.sampler.encode_still(first_frame))
                    return continuation_latents(self.latent_frames(latents, plan.num_frames, height, width),
                                                continuation, portrait=portrait_latents[0],
                                                reference=still[0] if still else None)

                def decode(latents, plan):
                    if plan.start == 0:
                        clock.report("decoding", 0.0)
                    decoded_frames = self.decode(latents, plan.num_frames, height, width, generator,
                                                 decode_timestep, decode_noise_scale)
                    return decoded_frames if colour_anchor is None else colour_anchor(decoded_frames, plan.lead)

                decoded = stream_chunks(chunks, conditioning, first_frame, total_frames, denoise, decode,
                                        hand_over=hand_over, blend=continuation.blends, overlap=overlap,
                                        on_step=on_step, memory=memory)
                with contextlib.closing(decoded):
                    for chunk in decoded:
                        clock.timings["denoising"] += chunk.seconds["denoising"]
                        clock.timings["decoding"] += chunk.seconds["decoding"]
                        records.append(chunk_record(chunk))
                        clock.report("decoding", (chunk.index + 1) / len(chunks))
                        if chunk.index == 0:
                            clock.report("writing", 0.0)
                        with clock.timed("writing"):
                            path = segments.write(chunk) if segments is not None else None
                            if final is not None:
                                final.add(chunk.frames)
                            else:
                                frames.append(chunk.frames)
                        if chunk.end_frame >= first_second and "first_second" not in clock.timings:
                            clock.timings["first_second"] = time.perf_counter() - started
                        if chunk.index < len(chunks) - 1:  # the last one waits for the final MP4 (below)
                            yield Segment(index=chunk.index, start_frame=chunk.start_frame,
                                          num_frames=len(chunk.frames), fps=fps, frames=chunk.frames, path=path,
                                          chunk=records[-1])
        except BaseException:
            if final is not None:
                final.abort()
            raise
        with clock.timed("writing"):
            if final is not None:
                num_frames = final.close()
            else:
                # The writer takes frames one by one: no second copy of the whole video.
                num_frames = sum(len(chunk_frames) for chunk_frames in frames)
                self.write(output, (frame for chunk_frames in frames for frame in chunk_frames), fps,
                           speech.audio_mux)
        clock.report("writing", 1.0)
        result = GenerationResult(
            video_path=output, duration=speech.duration, num_frames=num_frames, height=height, width=width, fps=fps,
            seed=seed, num_chunks=len(chunks), steps=steps, guidance=guidance,
            guidance_interval=settings.guidance_interval, guidance_region=region.summary(),
            start_sigma=settings.start_sigma, steps_run=total_steps,
            start_region=None if from_noise is None else from_noise.summary(),
            speech_source=speech.source,
            face_center=center, timings=clock.timings, words=speech.words, handoff=continuation.summary(),
            chunks=records, memory_kind=None if memory is None else memory.kind)
        yield Segment(index=chunk.index, start_frame=chunk.start_frame, num_frames=len(chunk.frames), fps=fps,
                      frames=chunk.frames, path=path, result=result, chunk=records[-1])

    # ------------------------------------------------------------------------------------------ stages

    def chunk_features(self, audio_16k: np.ndarray, chunks: list[ChunkPlan], fps: float) -> list[np.ndarray]:
        """The feature rows [chunk.num_frames, D] of every chunk: one encoding of the whole speech, cut per chunk
        (:func:`avatar_gen.audio.features.speech_features`, as the audio stage cuts a training clip's speech), so
        row ``i`` of a chunk carries the audio at time ``(chunk.start + i) / fps``."""
        from avatar_gen.audio.features import speech_features

        return speech_features(self.audio_encoder, audio_16k, [(chunk.start, chunk.num_frames) for chunk in chunks],
                               fps)

    def silence_features(self, num_frames: int, fps: float) -> np.ndarray:
        """[num_frames, D]: the features of silence for a chunk of ``num_frames`` frames, the guidance negative;
        the same rows the audio stage writes for audio dropout in training
        (:func:`avatar_gen.audio.features.silence_features`).  Cached per length and rate."""
        from avatar_gen.audio.features import silence_features

        key = (num_frames, float(fps))
        if key not in self._silence:
            self._silence[key] = silence_features(self.audio_encoder, num_frames, fps)
        return self._silence[key]

    def chunk_conditioning(self, audio_16k: np.ndarray, chunks: list[ChunkPlan], fps: float, height: int,
                           width: int, negative: bool = True) -> list[ChunkConditioning]:
        """Audio tokens and masks for every chunk, from one feature sequence over the whole speech
        (:meth:`chunk_features`, then :meth:`chunk_inputs` per chunk).  ``negative``: also make the silence
        embeddings guidance needs (without guidance they are None)."""
        features = self.chunk_features(audio_16k, chunks, fps)
        return [self.chunk_inputs(rows, chunk, fps, height, width, negative) for chunk, rows in zip(chunks, features)]

    @torch.no_grad()
    def chunk_inputs(self, rows: np.ndarray, chunk: ChunkPlan, fps: float, height: int, width: int,
                     negative: bool = True) -> ChunkConditioning:
        """One chunk's audio tokens and masks from its feature ``rows`` [chunk.num_frames, D].

        Its tokens are the projection of the rows (token ``i`` beside the frame it describes, with the in-chunk frame
        index ``i``, as in training); its negative is the projection of :meth:`silence_features` for its length, the
        input audio dropout trains for.
        """
        # the token grid, as the denoiser builds the mask in training (after the transformer's patching)
        token_frames, token_height, token_width = self.sampler.grid(chunk.num_frames, height, width).token_grid
        mask = self.denoiser.attention_mask(1, chunk.num_frames, token_frames, token_height, token_width, self.device)
        silence = self.silence_features(chunk.num_frames, fps) if negative else None
        embeds = [None if values is None else
                  self.audio_projection(torch.from_numpy(values)[None].to(self.device)).to(self.dtype)
                  for values in (rows, silence)]
        return ChunkConditioning(prompt_embeds=embeds[0], prompt_attention_mask=mask, negative_prompt_embeds=embeds[1],
                                 negative_prompt_attention_mask=mask if negative else None)

    def denoise(self, condition_frame: np.ndarray | None, inputs: ChunkConditioning, num_frames: int, height: int,
                width: int, fps: float, steps: int | None, guidance: float, generator: torch.Generator,
                on_step: Callable[[int], None] | None = None, timesteps: Sequence[float] | None = None,
                condition_latents: torch.Tensor | None = None,
                guidance_interval: tuple[float, float] = FULL_INTERVAL,
                guidance_cells: np.ndarray | None = None, start_sigma: float = 1.0,
                start_latents: torch.Tensor | None = None, noise_cells: np.ndarray | None = None) -> torch.Tensor:
        """One chunk through :meth:`ChunkSampler.denoise`: packed, normalised latents float32 [1, tokens, C'].

        The chunk starts from ``condition_frame`` (uint8 [height, width, 3], encoded as latent frame 0) or, with
        ``condition_frame`` None, from ``condition_latents`` (clean normalised [1, C, m, h, w]: its first m latent
        frames, kept as given; e.g. :meth:`latent_frames` of the previous chunk).  ``steps`` regular steps, or the
        fixed ``timesteps``; ``on_step(step)`` after every step; ``guidance`` at the noise levels of
        ``guidance_interval`` on the tokens of ``guidance_cells`` (None: all; :meth:`regions`); from
        ``start_latents`` noised to ``start_sigma`` when it is below 1, but for the tokens of ``noise_cells``, which
        start from pure noise (:meth:`regions`; :meth:`ChunkSampler.denoise`).  A warning when
        more frames are given than the checkpoint was trained to continue from (its ``continuation_max_frames``; 1
        without continuation training)."""
        if condition_latents is not None:
            trained = max(1, int(self.metadata.get("continuation_max_frames") or 0))
            given = int(condition_latents.shape[2])
            if given > trained and given not in self._warned_given_frames:
                self._warned_given_frames.add(given)
                log.warning("conditioning on %d latent frames; checkpoint %s was trained with at most %d "
                            "(conditioning.continuation_max_frames)", given, self.checkpoint.path, trained)
        return self.sampler.denoise(inputs, num_frames, height, width, fps, steps, guidance, generator,
                                    image=condition_frame, condition_latents=condition_latents, timesteps=timesteps,
                                    on_step=on_step, guidance_interval=guidance_interval,
                                    guidance_cells=guidance_cells, start_sigma=start_sigma,
                                    start_latents=start_latents, noise_cells=noise_cells)

    def latent_frames(self, packed_latents: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        """A chunk's packed latents as normalised latent frames [1, C, F', h, w] (``[:, :, -m:]`` of them can
        condition the next chunk through :meth:`denoise`'s ``condition_latents``)."""
        return self.sampler.unpack(packed_latents, num_frames, height, width)

    def decode(self, packed_latents: torch.Tensor, num_frames: int, height: int, width: int,
               generator: torch.Generator, decode_timestep: float = DEFAULT_DECODE_TIMESTEP,
               decode_noise_scale: float = DEFAULT_DECODE_NOISE_SCALE) -> np.ndarray:
        """Packed normalised latents -> uint8 frames [num_frames, height, width, 3], as the pipeline decodes them.

        UserError when the latents are not finite: decoded, NaN would become an all-black video."""
        if not bool(torch.isfinite(packed_latents).all()):
            raise UserError(f"checkpoint {self.checkpoint.path} made NaN/inf latents: its weights have diverged "
                            "(a far too large learning rate?); use an earlier checkpoint")
        return self.sampler.decode(packed_latents, num_frames, height, width, generator, decode_timestep,
                                   decode_noise_scale)

    def write(self, output: Path, video: Iterable[np.ndarray], fps: float, audio_mux: np.ndarray) -> Path:
        """H.264 + AAC MP4 of uint8 frames (an array or any iterable of frames) and speech at ``MUX_SAMPLE_RATE``,
        atomically (a failure leaves nothing new at ``output``)."""
        from avatar_gen.media.video import write_video

        return write_video(output, video, fps, audio=audio_mux, sample_rate=MUX_SAMPLE_RATE)


class _LazyConditioning(Sequence):
    """The chunks' caption-slot inputs, projected from their feature rows when a chunk asks for them
    (:meth:`AvatarGenerator.chunk_inputs`): only the chunk being denoised holds audio tokens on the device."""

    def __init__(self, generator: AvatarGenerator, features: list[np.ndarray], chunks: list[ChunkPlan], fps: float,
                 height: int, width: int, negative: bool):
        self.generator, self.features, self.chunks = generator, features, chunks
        self.fps, self.height, self.width, self.negative = fps, height, width, negative

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        return self.generator.chunk_inputs(self.features[index], self.chunks[index], self.fps, self.height,
                                           self.width, self.negative)


def _warn_if_other_vae(metadata: dict[str, Any], vae, folder: Path, base: str) -> None:
    """Warn when the VAE's latent statistics differ from those the training latents were normalised with: the
    model then sees latents on another scale than it learned (a different VAE than training's)."""
    recorded = (metadata.get("latents") or {}).get("vae") or {}
    if "latents_mean" not in recorded or "latents_std" not in recorded:
        return
    same = (np.allclose(recorded["latents_mean"], vae.latents_mean.float().cpu().numpy(), rtol=1e-2, atol=1e-3)
            and np.allclose(recorded["latents_std"], vae.latents_std.float().cpu().numpy(), rtol=1e-2, atol=1e-3))
    if not same:
        log.warning("the VAE of %s is not the one checkpoint %s was trained with (%s): its latent statistics differ, "
                    "expect poor videos", base, folder, recorded.get("name_or_path"))


def load_scheduler_config(base: str, revision: str | None) -> dict[str, Any]:
    """The base model's scheduler config (``scheduler/``), completed with diffusers' defaults: what
    :func:`avatar_gen.model.sampling.sigma_schedule` computes the schedule from."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from avatar_gen.model.sampling import check_scheduler_config

    try:
        config = dict(FlowMatchEulerDiscreteScheduler.from_config(
            FlowMatchEulerDiscreteScheduler.load_config(base, subfolder="scheduler", revision=revision)).config)
        check_scheduler_config(config)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot use the scheduler of the base model {base}: {first_line(exc)}") from None
    return config
