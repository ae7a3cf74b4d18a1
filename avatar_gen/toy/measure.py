"""``python -m avatar_gen.toy measure``: what trained checkpoints learned, judged on held-out clips (docs/toy.md).

One command, one JSON (``measure.json``) and one Markdown report (``measure.md``) over any list of checkpoints:

``vae``     the ceiling of each checkpoint's base VAE: reconstruction PSNR, and the offline sync@0 score of the
            reconstructions next to that of the originals (:func:`avatar_gen.toy.vae.vae_ceiling`);
``gain``    the held-out audio-conditioning gain (loss with another clip's chunk's audio / with the true audio, same
            noise and sigma draws; :func:`avatar_gen.training.validation.audio_gain` with the trainer's own loss) on
            chunks that the stage functions make from the held-out clips, with the checkpoint's base VAE and encoder;
``videos``  generated videos through :class:`~avatar_gen.inference.AvatarGenerator` for held-out cases (portrait = a
            clip's first frame, speech = that clip's own sound): face found, offline sync@0 against the speech, the
            same video scored against another clip's speech (a control near 0), identity SSIM to the portrait, flicker;
``sweep``   the videos' sync and SSIM at several audio guidance scales, on the first cases;
``noise``   the held-out flow loss at fixed noise levels (the share of the noise a one-step denoise at that level
            leaves: above 1 the prediction adds noise), beside the sampler's own noise levels: where the model is
            weak, e.g. a small pretraining that never learned the last steps (docs/results.md).

Everything costly is cached under ``<out>/cache`` per checkpoint (by a fingerprint of its files) and per clip, so a
re-run after an interruption, or with more cases, only does what is missing.  The long-video report of
:mod:`avatar_gen.toy.measure_long` shares the data handling here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from avatar_gen.config import StrictModel
from avatar_gen.errors import UserError
from avatar_gen.layout import SPLIT_FILE
from avatar_gen.limits import MAX_GUIDANCE, MAX_STEPS, MIN_GUIDANCE, MIN_STEPS
from avatar_gen.toy.measure_report import comparison_rows, render_measure_report, spread
from avatar_gen.utils.datafiles import load_json
from avatar_gen.utils.io import atomic_write_json, atomic_write_text, read_json, remove_stale_temporaries
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

REPORT_JSON = "measure.json"
REPORT_MARKDOWN = "measure.md"
CACHE_FOLDER = "cache"
LOCK_FILE = ".measure.lock"  # one measurement at a time per --out: two would write the same cached videos
REPORT_FORMAT_VERSION = 1
# Bump when a figure is computed differently: cached figures of an older version are recomputed (videos are kept).
SCORING_VERSION = 1
GAIN_VERSION = 2  # 2: also the gain on the mouth's tokens
SECTIONS = ("vae", "gain", "videos", "sweep", "noise")
NOISE_VERSION = 1
CHECKPOINT_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-+")
DETECT_EVERY = 2  # face detection on every 2nd frame, boxes interpolated between (evaluation's default)
# What the gain compares against: the partner chunk of each chunk (audio_gain pairs a chunk with the next one of its
# shape; the chunks are ordered so that the next one is another clip's).
GAIN_PARTNER = "the next chunk in clip-interleaved order: another held-out clip's chunk"


# ------------------------------------------------------------------------------------------------------ settings

class MeasureSettings(StrictModel):
    """What both reports share: the checkpoints, the held-out clips, the output folder, the sampling settings."""

    checkpoints: dict[str, Path] = Field(min_length=1, description="label -> checkpoint folder (or latest / run)")
    held_out: Path = Field(description="held-out synthetic clips: clips/<id>.mp4 + ground_truth/<id>.json")
    out: Path = Field(description="report folder: the JSON, the Markdown and cache/")
    steps: int = Field(default=20, ge=MIN_STEPS, le=MAX_STEPS, description="denoising steps per chunk")
    guidance: float | None = Field(default=None, ge=MIN_GUIDANCE, le=MAX_GUIDANCE,
                                   description="audio guidance scale (default: the generator's)")
    guidance_interval: tuple[float, float] | None = Field(
        default=None, description="noise levels (low, high) at which guidance applies (default: the generator's)")
    guidance_region: str | None = Field(default=None,
                                        description="the tokens guidance applies to (default: the generator's)")
    start_sigma: float | None = Field(default=None,
                                      description="noise level denoising starts at, from the portrait's still video "
                                                  "(default: the generator's; 1 = pure noise)")
    start_region: str | None = Field(default=None,
                                     description="the tokens that start there below 1 (default: the generator's)")
    seed: int = Field(default=0, ge=0, description="seed of every generation and of the gain's draws")
    device: str = Field(default="cpu", description="torch device")
    cpu_threads: int | None = Field(default=None, ge=1, description="torch threads on CPU (default: torch's)")

    @field_validator("guidance_interval")
    @classmethod
    def _interval(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        from avatar_gen.inference.guidance import check_guidance_interval

        return None if value is None else check_guidance_interval(value)

    @field_validator("start_sigma")
    @classmethod
    def _start(cls, value: float | None) -> float | None:
        from avatar_gen.model.sampling import check_start_sigma

        return None if value is None else check_start_sigma(value)

    @field_validator("guidance_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        from avatar_gen.inference.guidance import check_guidance_region

        return None if value is None else check_guidance_region(value)

    @field_validator("start_region")
    @classmethod
    def _start_region(cls, value: str | None) -> str | None:
        from avatar_gen.inference.guidance import check_start_region

        return None if value is None else check_start_region(value)

    @field_validator("checkpoints")
    @classmethod
    def _labels(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            if not name or not set(name) <= CHECKPOINT_NAME_CHARACTERS:
                raise ValueError(f"checkpoint label {name!r} may hold only letters, digits and _ . - +")
        return value


class MeasureConfig(MeasureSettings):
    """``python -m avatar_gen.toy measure`` (the defaults are what issue 14 asks to measure)."""

    sections: list[Literal["vae", "gain", "videos", "sweep", "noise"]] = Field(
        default_factory=lambda: list(SECTIONS), min_length=1, description="what to measure")
    vae_clips: int = Field(default=24, ge=1, description="held-out clips reconstructed for the VAE ceiling")
    gain_chunks: int = Field(default=64, ge=2, description="held-out chunks the audio gain is measured on")
    num_draws: int = Field(default=4, ge=1, description="noise/sigma draws of the gain (its spread is over them)")
    cases: int = Field(default=16, ge=2, description="held-out cases generated (portrait + own speech)")
    sweep_guidance: list[float] = Field(default_factory=lambda: [1.0, 2.0, 3.0, 5.0], min_length=1,
                                        description="audio guidance scales of the sweep")
    sweep_cases: int = Field(default=4, ge=1, description="cases generated at every sweep guidance")
    noise_levels: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.95], min_length=1,
                                      description="noise levels (sigma) of the loss by noise level")
    noise_chunks: int = Field(default=24, ge=1, description="held-out chunks of the loss by noise level")

    @field_validator("noise_levels")
    @classmethod
    def _noise_bounds(cls, value: list[float]) -> list[float]:
        for level in value:
            if not 0 < level <= 1:
                raise ValueError(f"noise level {level:g} is outside (0, 1]")
        return sorted(set(value))

    @field_validator("sweep_guidance")
    @classmethod
    def _guidance_bounds(cls, value: list[float]) -> list[float]:
        for guidance in value:
            if not MIN_GUIDANCE <= guidance <= MAX_GUIDANCE:
                raise ValueError(f"guidance {guidance:g} is outside [{MIN_GUIDANCE:g}, {MAX_GUIDANCE:g}]")
        return sorted(set(value))

    @model_validator(mode="after")
    def _sweep_within_cases(self) -> MeasureConfig:
        if self.sweep_cases > self.cases:
            raise ValueError(f"sweep_cases {self.sweep_cases} exceeds cases {self.cases} (the sweep uses the first "
                             "cases)")
        return self


def parse_checkpoint_flags(values: list[str]) -> dict[str, Path]:
    """``--checkpoint NAME=PATH`` (or a bare ``PATH``, labelled by its run folder) into an ordered mapping."""
    checkpoints: dict[str, Path] = {}
    for value in values:
        name, separator, path = value.partition("=")
        if not separator:
            name, path = default_checkpoint_label(Path(value)), value
        if not name or not path:
            raise UserError(f"--checkpoint must look like NAME=PATH (or PATH), got {value!r}")
        if name in checkpoints:
            raise UserError(f"--checkpoint: the label {name!r} is given twice")
        checkpoints[name] = Path(path)
    return checkpoints


def default_checkpoint_label(path: Path) -> str:
    """A label for a checkpoint given without one: its run folder's name (``outputs/<run>/checkpoints/...``)."""
    parts = path.absolute().parts
    name = parts[parts.index("checkpoints") - 1] if "checkpoints" in parts[1:] else path.name
    return "".join(character if character in CHECKPOINT_NAME_CHARACTERS else "_" for character in name) or "model"


# ------------------------------------------------------------------------------------------------------ held-out

@dataclass(frozen=True)
class HeldOutClip:
    """One held-out synthetic clip (an unseen figure, sentence and voice)."""

    clip_id: str
    video_path: Path
    text: str
    voice: str | None
    fps: float
    num_frames: int
    duration: float
    truth: dict[str, Any] = field(repr=False, compare=False)

    @property
    def fingerprint(self) -> tuple[str, int, int]:
        """(path, size, mtime) of the clip's video: a regenerated clip is measured again."""
        stat = self.video_path.stat()
        return str(self.video_path.resolve()), stat.st_size, stat.st_mtime_ns

    def first_frame(self) -> np.ndarray:
        """The portrait of a case: the clip's first frame, uint8 RGB [H, W, 3]."""
        from avatar_gen.media import read_frames

        return read_frames(self.video_path, max_frames=1)[0]

    def speech_16k(self) -> np.ndarray:
        """The clip's own sound, float32 mono at 16 kHz."""
        from avatar_gen.media import SAMPLE_RATE, extract_audio

        return extract_audio(self.video_path, SAMPLE_RATE)


@dataclass(frozen=True)
class HeldOutSet:
    folder: Path
    clips: list[HeldOutClip]

    @property
    def fps(self) -> float:
        return self.clips[0].fps

    def summary(self) -> dict[str, Any]:
        """Data sizes for the report."""
        truth = self.clips[0].truth
        return {"folder": str(self.folder), "clips": len(self.clips),
                "seconds": round(sum(clip.duration for clip in self.clips), 2),
                "frames": sum(clip.num_frames for clip in self.clips), "fps": self.fps,
                "frame_size": [truth.get("height"), truth.get("width")],
                "voices": sorted({clip.voice for clip in self.clips if clip.voice}),
                "sentences": len({clip.text for clip in self.clips})}


def read_held_out(folder: Path) -> HeldOutSet:
    """The talking clips of a synthetic folder (``avatar_gen.synthetic`` layout), sorted by id; UserError when the
    folder is not one."""
    from avatar_gen.synthetic.dataset import CLIPS_DIR, GROUND_TRUTH_DIR

    folder = Path(folder)
    if not (folder / GROUND_TRUTH_DIR).is_dir() or not (folder / CLIPS_DIR).is_dir():
        raise UserError(f"--held_out {folder} is not a synthetic clip folder (no {CLIPS_DIR}/ and "
                        f"{GROUND_TRUTH_DIR}/; the toy's held-out clips are <work_dir>/synthetic/held_out)")
    clips = []
    for truth_path in sorted((folder / GROUND_TRUTH_DIR).glob("*.json")):
        truth = load_json(truth_path, "ground truth")
        try:
            if truth.get("kind", "speech") != "speech":
                continue  # two-face and silent clips are no lip-sync case
            clip_id = str(truth["clip_id"])
            if clip_id != truth_path.stem:  # the id names a file: it must be the one this record was written for
                raise UserError(f"ground truth {truth_path} names the clip {clip_id!r}, not {truth_path.stem!r}")
            clip = HeldOutClip(clip_id=clip_id, video_path=folder / CLIPS_DIR / f"{clip_id}.mp4",
                               text=str(truth.get("text", "")), voice=truth.get("voice"), fps=float(truth["fps"]),
                               num_frames=int(truth["num_frames"]), duration=float(truth["duration"]), truth=truth)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"ground truth {truth_path} lacks clip_id/fps/num_frames/duration ({exc})") from None
        if not clip.video_path.is_file():
            raise UserError(f"held-out clip {clip_id}: {clip.video_path} is missing")
        clips.append(clip)
    if not clips:
        raise UserError(f"no talking clips in {folder / GROUND_TRUTH_DIR}")
    rates = {clip.fps for clip in clips}
    if len(rates) > 1:
        raise UserError(f"held-out clips at several frame rates {sorted(rates)}: measure one rate at a time")
    return HeldOutSet(folder=folder, clips=clips)


# ------------------------------------------------------------------------------------------------------ checkpoints

@dataclass
class CheckpointInfo:
    """A checkpoint to measure: its folder, recorded metadata and a fingerprint of its files (the cache key)."""

    name: str
    folder: Path
    metadata: dict[str, Any]
    fingerprint: str

    @property
    def base(self) -> str:
        return str((self.metadata.get("base_model") or {}).get("pretrained") or "")

    @property
    def revision(self) -> str | None:
        return (self.metadata.get("base_model") or {}).get("revision")

    @property
    def run_folder(self) -> Path | None:
        """``outputs/<run>`` of ``outputs/<run>/checkpoints/step_XXXXXX``, None for a checkpoint elsewhere."""
        return self.folder.parent.parent if self.folder.parent.name == "checkpoints" else None

    @property
    def cache_name(self) -> str:
        return f"{self.name}-{self.fingerprint[:12]}"

    def summary(self) -> dict[str, Any]:
        encoder = self.metadata.get("audio_encoder") or {}
        return {"path": str(self.folder), "step": self.metadata.get("step"),
                "transformer_training": self.metadata.get("transformer_training"),
                "alignment": self.metadata.get("alignment", "global"), "encoder": encoder.get("encoder"),
                "encoder_name_or_path": encoder.get("name_or_path"), "base_model": self.base,
                "video": self.metadata.get("video"), "fingerprint": self.fingerprint[:16]}


def digest(value: Any) -> str:
    """A stable hex digest of a JSON-able value (cache keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(**parts: Any) -> dict[str, Any]:
    """What a cached record was made from, as it reads back from its JSON (tuples become lists), so that it compares
    equal to the stored one."""
    return json.loads(json.dumps(parts, default=str))


def files_fingerprint(folder: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every file under ``folder`` (a changed or retrained file changes it)."""
    entries = []
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith(skip):
            stat = path.stat()
            entries.append((relative, stat.st_size, stat.st_mtime_ns))
    return entries


def model_fingerprint(name_or_path: str, revision: str | None) -> Any:
    """A local base model by its files (size and time of each), a hub id by name and revision."""
    if not name_or_path:
        return None
    local = Path(os.path.expanduser(name_or_path))
    if local.is_dir():
        return {"path": str(local.resolve()), "files": files_fingerprint(local)}
    return {"hub": name_or_path, "revision": revision}


def describe_checkpoint(name: str, path: Path) -> CheckpointInfo:
    from avatar_gen.model.checkpoint import TRAINING_STATE_FOLDER, read_checkpoint_metadata, resolve_checkpoint

    folder = resolve_checkpoint(path)
    metadata = read_checkpoint_metadata(folder)
    base = metadata.get("base_model") or {}
    # A LoRA is measured on its base: a retrained base (the toy's can be) changes the fingerprint too.
    fingerprint = digest({"folder": str(folder.resolve()),
                          "files": files_fingerprint(folder, skip=(TRAINING_STATE_FOLDER,)),
                          "base": model_fingerprint(str(base.get("pretrained") or ""), base.get("revision"))})
    return CheckpointInfo(name=name, folder=folder, metadata=metadata, fingerprint=fingerprint)


def check_held_out(model: CheckpointInfo, held_out: HeldOutSet) -> None:
    """UserError when the checkpoint's run trained on a clip of the held-out set (its ``data_split.json``)."""
    run = model.run_folder
    if run is None or not (run / SPLIT_FILE).is_file():
        return
    split = load_json(run / SPLIT_FILE, "training split")
    trained = set(split.get("train_clips") or []) if isinstance(split, dict) else set()
    overlap = sorted(trained & {clip.clip_id for clip in held_out.clips})
    if overlap:
        raise UserError(f"checkpoint {model.name} trained on {len(overlap)} of the clips in {held_out.folder} "
                        f"(e.g. {overlap[0]}, listed in {run / SPLIT_FILE}): they are not held out for it")


# ------------------------------------------------------------------------------------------------------ figures

def score_video(video_path: Path, speech_16k: np.ndarray, control_16k: np.ndarray,
                portrait: np.ndarray) -> dict[str, Any]:
    """The figures of one generated video: face found (% of the frames the detector ran on, every 2nd as in
    evaluation), offline sync@0 against its own speech and against ``control_16k`` (another clip's speech, repeated or
    cut to the same length), identity SSIM of the face region (the whole frame without a face) to the portrait, and
    flicker (mean absolute difference of consecutive frames, 0..255).  One face track serves every figure."""
    from avatar_gen.evaluation.faces import track_face
    from avatar_gen.evaluation.lipsync import offline_sync_at_zero
    from avatar_gen.evaluation.quality import temporal_stability
    from avatar_gen.media import probe_video, read_frames

    fps = probe_video(video_path).fps
    frames = read_frames(video_path)
    track = track_face(frames, detect_every=DETECT_EVERY)
    control = np.resize(control_16k, len(speech_16k))  # repeated when shorter: the control covers the whole video
    stability = temporal_stability(frames, track, anchor_image=portrait)
    scores = {"sync": None, "sync_control": None}
    if track is not None:
        scores = {"sync": offline_sync_at_zero(frames, track, speech_16k, fps),
                  "sync_control": offline_sync_at_zero(frames, track, control, fps)}
    return {"num_frames": len(frames), "fps": fps,
            "face_found_pct": 100.0 * track.detection_rate if track is not None else 0.0, **scores,
            "identity_ssim": stability.drift_ssim_mean, "identity_region": stability.drift_region,
            "flicker": stability.flicker_mean}


# ------------------------------------------------------------------------------------------------------ generation

class LazyGenerator:
    """Loads a checkpoint's :class:`~avatar_gen.inference.AvatarGenerator` on first use, so that a re-run whose
    videos are all cached loads nothing."""

    def __init__(self, model: CheckpointInfo, device: str):
        self.model, self.device = model, device
        self._generator = None

    def get(self):
        if self._generator is None:
            from avatar_gen.inference import AvatarGenerator

            self._generator = AvatarGenerator.load(self.model.folder, device=self.device)
        return self._generator


def default_guidance() -> float:
    from avatar_gen.inference import DEFAULT_GUIDANCE

    return float(DEFAULT_GUIDANCE)


@dataclass(frozen=True)
class VideoSampling:
    """How a measurement's videos are sampled besides the scale, steps and seed: where the guidance applies (the
    token ``region`` and the noise-level ``interval``), the noise level denoising starts at (``start_sigma``) and,
    below 1, the tokens that start there (``start_region``)."""

    region: str
    interval: tuple[float, float]
    start_sigma: float
    start_region: str = "frame"

    def key(self) -> dict[str, Any]:
        """What a cache key holds of it: nothing for the whole frame at every noise level from pure noise (and no
        start region for a start of the whole frame), so that videos made before these settings existed keep their
        keys."""
        from avatar_gen.inference.guidance import FULL_INTERVAL

        key: dict[str, Any] = {} if self.region == "frame" else {"guidance_region": self.region}
        if tuple(self.interval) != FULL_INTERVAL:
            key["guidance_interval"] = list(self.interval)
        if self.start_sigma < 1.0:
            key["start_sigma"] = self.start_sigma
            if self.start_region != "frame":
                key["start_region"] = self.start_region
        return key

    def suffix(self) -> str:
        """The file-name part of :meth:`key` (``-mouth``, ``-gi0.3-1``, ``-start0.8``, ``-outside_mouth``)."""
        key = self.key()
        return (f"-{self.region}" if "guidance_region" in key else "") + \
            ("-gi{:g}-{:g}".format(*self.interval) if "guidance_interval" in key else "") + \
            (f"-start{self.start_sigma:g}" if "start_sigma" in key else "") + \
            (f"-{self.start_region}" if "start_region" in key else "")

    def record(self) -> dict[str, Any]:
        """The report's record of it."""
        return {"guidance_region": self.region, "guidance_interval": list(self.interval),
                "start_sigma": self.start_sigma, "start_region": self.start_region}

    def generation_kwargs(self) -> dict[str, Any]:
        """The arguments of :meth:`AvatarGenerator.generate <avatar_gen.inference.AvatarGenerator.generate>` it sets."""
        return {"guidance_interval": self.interval, "guidance_region": self.region, "start_sigma": self.start_sigma,
                "start_region": self.start_region}


def video_sampling(settings: MeasureSettings, guidance: float | None = None) -> VideoSampling:
    """How the measurement's videos are sampled: the settings', else the generator's defaults; a video made at
    ``guidance`` <= 1 is guided nowhere (the whole frame at every level: such a video is the same whatever the region
    or interval, so it keeps one cache key)."""
    from avatar_gen.inference.generator import (DEFAULT_GUIDANCE_INTERVAL, DEFAULT_GUIDANCE_REGION,
                                                DEFAULT_START_REGION, DEFAULT_START_SIGMA)
    from avatar_gen.inference.guidance import FULL_INTERVAL

    start = settings.start_sigma if settings.start_sigma is not None else DEFAULT_START_SIGMA
    start_region = settings.start_region or DEFAULT_START_REGION
    if guidance is not None and guidance <= 1.0:
        return VideoSampling("frame", FULL_INTERVAL, start, start_region)
    return VideoSampling(settings.guidance_region or DEFAULT_GUIDANCE_REGION,
                         settings.guidance_interval or DEFAULT_GUIDANCE_INTERVAL, start, start_region)


def generated_case(generator: LazyGenerator, model: CheckpointInfo, case: HeldOutClip, control: HeldOutClip,
                   guidance: float, settings: MeasureSettings, folder: Path) -> dict[str, Any]:
    """Generate (or take from ``folder``) the video of one held-out case and its figures (:func:`score_video`)."""
    from avatar_gen.inference.handoff import handoff_defaults

    sampling = video_sampling(settings, guidance)
    key = (f"{case.clip_id}-g{guidance:g}{sampling.suffix()}-steps{settings.steps}"
           f"-seed{settings.seed}")
    video_path, record_path = folder / f"{key}.mp4", folder / f"{key}.json"
    # a video of several chunks is made with the default hand-off: its key holds what the defaults were
    video_key = cache_key(checkpoint=model.fingerprint, portrait_and_speech=case.fingerprint, guidance=guidance,
                          steps=settings.steps, seed=settings.seed, handoff_defaults=handoff_defaults(),
                          **sampling.key())
    scoring_key = cache_key(version=SCORING_VERSION, control=control.fingerprint)
    cached = read_json(record_path) or {}
    have_video = video_path.is_file() and cached.get("video_key") == video_key
    if have_video and cached.get("scoring_key") == scoring_key:
        return cached["case"]
    portrait = case.first_frame()
    generation = cached.get("generation") if have_video else None
    if generation is None:
        started = time.perf_counter()
        result = generator.get().generate(portrait, audio=case.video_path, output=video_path, steps=settings.steps,
                                          guidance=guidance, seed=settings.seed, **sampling.generation_kwargs())
        generation = {"seconds": round(time.perf_counter() - started, 3), "num_chunks": result.num_chunks,
                      "height": result.height, "width": result.width, "fps": result.fps}
    record = {"clip_id": case.clip_id, "control_clip_id": control.clip_id, "voice": case.voice,
              "speech_seconds": round(case.duration, 3), "guidance": guidance,
              **sampling.record(), "steps": settings.steps,
              "seed": settings.seed, "video": video_path.name, "generation": generation,
              **score_video(video_path, case.speech_16k(), control.speech_16k(), portrait)}
    atomic_write_json(record_path, {"video_key": video_key, "scoring_key": scoring_key, "generation": generation,
                                    "case": record})
    return record


CASE_FIGURES = ("face_found_pct", "sync", "sync_control", "identity_ssim", "flicker")


def summarise_cases(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {figure: spread([record[figure] for record in records]) for figure in CASE_FIGURES}


# ------------------------------------------------------------------------------------------------------ sections

def vae_section(model: CheckpointInfo, held_out: HeldOutSet, config: MeasureConfig, cache: Path) -> dict[str, Any]:
    """The VAE ceiling of the checkpoint's base model on the first ``vae_clips`` held-out clips (cached per base)."""
    from avatar_gen.latents.vae import load_vae, vae_compression
    from avatar_gen.media import read_frames
    from avatar_gen.toy.vae import ClipFrames, vae_ceiling

    clips = held_out.clips[:config.vae_clips]
    key = digest({"base": model_fingerprint(model.base, model.revision), "clips": [clip.fingerprint for clip in clips],
                  "version": SCORING_VERSION})
    path = cache / "vae" / f"{key[:24]}.json"
    cached = read_json(path)
    if cached is not None:
        return cached
    vae = load_vae(model.base, model.revision, dtype="fp32", device=config.device).vae
    temporal, _ = vae_compression(vae)
    frames, audio = [], {}
    for clip in clips:
        pixels = read_frames(clip.video_path)
        frames.append(ClipFrames(clip_id=clip.clip_id, frames=pixels[:reconstructable_frames(len(pixels), temporal)],
                                 mouth_x=0.0, mouth_y=0.0, head_radius=0.0))  # the ceiling needs no mouth box
        audio[clip.clip_id] = clip.speech_16k()
    report = vae_ceiling(vae, frames, audio, held_out.fps)
    result = {"base_model": model.base, "n_clips": len(clips), "held_out": True,
              "frames": sum(len(clip.frames) for clip in frames), "clips": report["clips"],
              **{figure: spread([row[figure] for row in report["clips"]])
                 for figure in ("psnr", "sync_original", "sync_reconstruction")}}
    atomic_write_json(path, result)
    return result


def reconstructable_frames(num_frames: int, temporal_compression: int) -> int:
    """The longest prefix that ``reconstruct`` gives back frame for frame: its last chunk must be t k + 1 frames long
    for a VAE that compresses time t-fold (a toy VAE that does not keeps every frame)."""
    from avatar_gen.toy.vae import RECONSTRUCT_CHUNK_FRAMES

    remainder = num_frames % RECONSTRUCT_CHUNK_FRAMES
    if temporal_compression <= 1 or remainder == 0:
        return num_frames
    return num_frames - remainder + (remainder - 1) // temporal_compression * temporal_compression + 1


def held_out_chunks(model: CheckpointInfo, held_out: HeldOutSet, config: MeasureSettings, cache: Path) -> list:
    """The held-out clips as training chunks for this checkpoint: the VAE-latents stage with its base VAE at its
    video size, then the audio-latents stage with ``audio_source original`` and its encoder (both resumable: a
    re-run skips complete chunks).  Returns the :class:`~avatar_gen.training.dataset.ChunkRecord` of every talking
    held-out clip's chunks."""
    from avatar_gen.audio.features import AudioEncoderSpec
    from avatar_gen.audio.pipeline import AudioLatentsConfig, save_audio_latents
    from avatar_gen.latents.encode import LatentsConfig, encode_dataset
    from avatar_gen.synthetic.dataset import CLIPS_DIR
    from avatar_gen.training.dataset import scan_chunks

    video = model.metadata.get("video") or {}
    spec_dict = model.metadata.get("audio_encoder")
    if not video or not spec_dict:
        raise UserError(f"checkpoint {model.folder} records no video size or audio encoder: cannot make its chunks")
    spec = AudioEncoderSpec.model_validate(spec_dict)
    geometry = {key: video[key] for key in ("height", "width", "num_frames", "fps")}
    root = cache / "chunks" / digest({"base": model_fingerprint(model.base, model.revision), **geometry,
                                      "clips": str(held_out.folder.resolve())})[:24]
    root.mkdir(parents=True, exist_ok=True)
    # The stages record video paths relative to the data root and read only paths inside it: the clips come in
    # through a link (a linked folder counts as inside).
    link = root / CLIPS_DIR
    target = (held_out.folder / CLIPS_DIR).resolve()
    if link.is_symlink() and Path(os.readlink(link)) != target:
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(target, target_is_directory=True)
    encode_dataset(LatentsConfig(inputs=link, output_dir=root / "vae_latents", pretrained=model.base,
                                 revision=model.revision, dtype="fp32", device=config.device, **geometry))
    features = root / f"audio_latents-{digest(spec.model_dump(mode='json'))[:12]}"
    save_audio_latents(AudioLatentsConfig(latents_dir=root / "vae_latents", audio_out=root / "audio_wav",
                                          ff_out=features, audio_source="original", encoder=spec,
                                          device=config.device))
    wanted = {clip.clip_id for clip in held_out.clips}
    feature_dim = spec.feature_dim or (model.metadata.get("audio_projection") or {}).get("feature_dim")
    records = [record for record in scan_chunks(root / "vae_latents", features, feature_dim)
               if record.clip_id in wanted]
    log.info("%s: %d held-out chunks of %d frames from %d clips (%s)", model.name, len(records),
             geometry["num_frames"], len({record.clip_id for record in records}), root)
    return records


def interleave_by_clip(records: list) -> list:
    """Chunk 0 of every clip, then chunk 1 of every clip, ...: neighbours come from different clips."""
    by_clip: dict[str, list] = {}
    for record in sorted(records, key=lambda record: (record.clip_id, int(record.key.rpartition("_")[2]))):
        by_clip.setdefault(record.clip_id, []).append(record)
    longest = max((len(chunks) for chunks in by_clip.values()), default=0)
    return [chunks[index] for index in range(longest) for chunks in by_clip.values() if index < len(chunks)]


def run_flow_settings(model: CheckpointInfo):
    """The noise-level settings the checkpoint trained with (its run's ``config.yaml``), else the defaults."""
    from avatar_gen.config import load_yaml, validate_config
    from avatar_gen.training.config import FlowSection
    from avatar_gen.training.trainer import RESOLVED_CONFIG

    run = model.run_folder
    if run is not None and (run / RESOLVED_CONFIG).is_file():
        path = run / RESOLVED_CONFIG
        flow = load_yaml(path).get("flow")
        if isinstance(flow, dict):
            return validate_config(FlowSection, flow, source=f"{path} (flow)"), str(path)
    return FlowSection(), "defaults (no run config.yaml beside the checkpoint)"


def checkpoint_denoiser(model: CheckpointInfo, device):
    """The checkpoint's transformer (LoRA applied) and audio projection as the trainer's denoiser, in eval mode."""
    from avatar_gen.model.checkpoint import load_avatar_checkpoint

    return load_avatar_checkpoint(model.folder, device=device).denoiser().eval()


def chunk_figure_path(model: CheckpointInfo, cache: Path, kind: str, records: list, **settings: Any) -> Path:
    """Where a figure of ``model`` over the chunks ``records`` is cached: keyed by the checkpoint's files, the chunks
    and every setting it was computed with."""
    key = digest({"checkpoint": model.fingerprint, "chunks": [record.key for record in records], **settings})
    return cache / "models" / model.cache_name / f"{kind}-{key[:24]}.json"


def mouth_token_weight(denoiser, record, truth: dict[str, Any]):
    """[N] float: 1 on the tokens of ``record``'s chunk whose pixels meet the clip's mouth box (the synthetic ground
    truth's mouth centre and head radius, the box the toy VAE weighs), 0 elsewhere; None when the chunk's frames are
    not the clip's frames at their own size (a resized or cropped chunk: the box would be elsewhere)."""
    import torch

    from avatar_gen.synthetic.dataset import truth_mouth_box

    if (record.height, record.width) != (truth.get("height"), truth.get("width")):
        return None
    channels, latent_frames, latent_height, latent_width = record.latent_shape
    frames, rows, cols = denoiser.token_grid(torch.zeros(1, channels, latent_frames, latent_height, latent_width))
    cells = truth_mouth_box(truth).cells(rows, cols)
    return torch.from_numpy(cells).float().flatten().repeat(frames)


def gain_section(model: CheckpointInfo, held_out: HeldOutSet, config: MeasureConfig, cache: Path) -> dict[str, Any]:
    """The held-out audio-conditioning gain over ``gain_chunks`` chunks, the trainer's loss at fixed draws."""
    import torch

    from avatar_gen.training.trainer import rectified_flow_loss
    from avatar_gen.training.validation import audio_gain

    records = interleave_by_clip(held_out_chunks(model, held_out, config, cache))
    available = len(records)
    records = records[:config.gain_chunks]
    if len(records) < config.gain_chunks:
        log.warning("%s: only %d held-out chunks exist, fewer than the %d asked for", model.name, len(records),
                    config.gain_chunks)
    flow, flow_source = run_flow_settings(model)
    path = chunk_figure_path(model, cache, "gain", records, draws=config.num_draws, seed=config.seed,
                             flow=flow.model_dump(mode="json"), version=SCORING_VERSION, gain_version=GAIN_VERSION)
    cached = read_json(path)
    if cached is not None:
        return cached
    device = torch.device(config.device)
    denoiser = checkpoint_denoiser(model, device)
    truths = {clip.clip_id: clip.truth for clip in held_out.clips}
    mouth_weights = {record.key: mouth_token_weight(denoiser, record, truths[record.clip_id]) for record in records}
    # The mouth's figure needs every chunk's box (a resized chunk has none): the same chunks, or no figure.
    regions = {"whole": records, "mouth": records if all(weight is not None for weight in mouth_weights.values())
               else []}
    figures = {}
    with progress(total=2 * len(records) * config.num_draws * sum(map(bool, regions.values())),
                  desc=f"{model.name}: audio gain", unit="loss") as bar:
        for region, region_records in regions.items():
            if not region_records:
                continue

            def loss(latents: torch.Tensor, audio: torch.Tensor, record, generator: torch.Generator,
                     region: str = region) -> torch.Tensor:
                bar.update(1)
                weight = mouth_weights[record.key] if region == "mouth" else None
                return rectified_flow_loss(denoiser, latents, audio, record.fps, generator, condition_probability=1.0,
                                           flow=flow, device=device, token_weight=weight)

            figures[region] = audio_gain(region_records, loss, config.num_draws, config.seed)
    if not figures["whole"]:
        raise UserError(f"{model.name}: fewer than two held-out chunks of one shape: no audio gain to measure")
    whole = figures["whole"]
    result = {"gain": whole["audio_gain"], "std": whole["audio_gain_std"], "spread_over": "draws",
              "n_chunks": int(whole["chunks"]), "n_clips": len({record.clip_id for record in records}),
              "chunks_available": available, "num_draws": config.num_draws, "loss_true": whole["loss_true"],
              "loss_shuffled": whole["loss_shuffled"], "chunk_frames": records[0].num_frames,
              "held_out": True, "partner": GAIN_PARTNER, "flow_settings": flow_source}
    mouth = figures.get("mouth")
    if mouth:
        result["mouth"] = {"gain": mouth["audio_gain"], "std": mouth["audio_gain_std"],
                           "loss_true": mouth["loss_true"], "loss_shuffled": mouth["loss_shuffled"],
                           "token_share": float(np.mean([float(weight.mean()) for weight in mouth_weights.values()]))}
    atomic_write_json(path, result)
    return result


def noise_section(model: CheckpointInfo, held_out: HeldOutSet, config: MeasureConfig, cache: Path) -> dict[str, Any]:
    """The held-out flow loss at each of ``noise_levels``: the trainer's loss (own audio, first frame given) with
    the sigma fixed, the same noise per chunk at every level; spread over ``noise_chunks`` chunks.  With the
    sampler's noise levels at ``steps`` steps, so a reader sees which of its steps run where the model is weak."""
    import torch

    from avatar_gen.inference.generator import load_scheduler_config
    from avatar_gen.model.sampling import sigma_schedule
    from avatar_gen.training.dataset import LatentAudioDataset
    from avatar_gen.training.trainer import rectified_flow_loss

    records = interleave_by_clip(held_out_chunks(model, held_out, config, cache))[:config.noise_chunks]
    if not records:
        raise UserError(f"{model.name}: no held-out chunks: no loss by noise level to measure")
    flow, flow_source = run_flow_settings(model)
    path = chunk_figure_path(model, cache, "noise", records, levels=config.noise_levels, seed=config.seed,
                             steps=config.steps, flow=flow.model_dump(mode="json"), version=NOISE_VERSION)
    cached = read_json(path)
    if cached is not None:
        return cached
    device = torch.device(config.device)
    denoiser = checkpoint_denoiser(model, device)
    dataset = LatentAudioDataset(records)
    items = [dataset[index] for index in range(len(records))]  # read once, used at every level
    rows = []
    with progress(total=len(config.noise_levels) * len(records), desc=f"{model.name}: loss by noise level",
                  unit="loss") as bar, torch.no_grad():
        for level in config.noise_levels:
            losses = []
            for index, (record, item) in enumerate(zip(records, items, strict=True)):
                generator = torch.Generator().manual_seed(config.seed + index)  # the same noise at every level
                losses.append(float(rectified_flow_loss(denoiser, item["latents"][None], item["audio"][None],
                                                        record.fps, generator, condition_probability=1.0,
                                                        flow=flow, device=device, sigma=level)))
                bar.update(1)
            rows.append({"sigma": level, "loss": spread(losses)})
    _, latent_frames, latent_height, latent_width = records[0].latent_shape
    schedule = sigma_schedule(load_scheduler_config(model.base, model.revision),
                              latent_frames * latent_height * latent_width, config.steps)
    result = {"rows": rows, "n_chunks": len(records), "n_clips": len({record.clip_id for record in records}),
              "chunk_frames": records[0].num_frames, "held_out": True, "steps": config.steps,
              "sampler_sigmas": [round(float(sigma), 4) for sigma in schedule.sigmas[:-1]],
              "flow_settings": flow_source}
    atomic_write_json(path, result)
    return result


def video_cases(held_out: HeldOutSet, config: MeasureConfig) -> tuple[list[HeldOutClip], dict[str, HeldOutClip]]:
    """The first ``cases`` held-out clips, and for each the clip whose speech is its control (the next one)."""
    cases = held_out.clips[:config.cases]
    if len(cases) < config.cases:
        log.warning("only %d held-out clips: %d cases instead of %d", len(cases), len(cases), config.cases)
    if len(cases) < 2:
        raise UserError(f"{held_out.folder} holds {len(cases)} talking clip(s): the control needs at least 2")
    return cases, {case.clip_id: cases[(index + 1) % len(cases)] for index, case in enumerate(cases)}


def ground_truth_videos(held_out: HeldOutSet, config: MeasureConfig, cache: Path) -> dict[str, Any]:
    """The video figures of the held-out clips themselves, scored exactly as the generated cases (portrait = the
    clip's first frame, the same control): what a perfect generator would reach at this size, the reference that
    each bar is read against (a figure's natural motion lowers identity SSIM, for one)."""
    cases, control = video_cases(held_out, config)
    key = digest({"cases": [(case.fingerprint, control[case.clip_id].fingerprint) for case in cases],
                  "version": SCORING_VERSION})
    path = cache / "ground_truth" / f"videos-{key[:24]}.json"
    cached = read_json(path)
    if cached is not None:
        return cached
    rows = [{"clip_id": case.clip_id, "control_clip_id": control[case.clip_id].clip_id,
             **score_video(case.video_path, case.speech_16k(), control[case.clip_id].speech_16k(),
                           case.first_frame())}
            for case in progress(cases, desc="ground-truth videos", unit="clip")]
    result = {"n_cases": len(rows), "held_out": True, "what": "the held-out clips themselves, scored as the "
              "generated cases", **summarise_cases(rows), "cases": rows}
    atomic_write_json(path, result)
    return result


def videos_section(model: CheckpointInfo, generator: LazyGenerator, held_out: HeldOutSet, config: MeasureConfig,
                   cache: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The generated held-out cases at the main guidance, and the guidance sweep over the first cases."""
    cases, control = video_cases(held_out, config)
    guidance = config.guidance if config.guidance is not None else default_guidance()
    jobs: list[tuple[float, HeldOutClip]] = []
    if "videos" in config.sections:
        jobs += [(guidance, case) for case in cases]
    if "sweep" in config.sections:
        jobs += [(scale, case) for scale in config.sweep_guidance for case in cases[:config.sweep_cases]
                 if not (scale == guidance and "videos" in config.sections)]
    folder = cache / "models" / model.cache_name / "videos"
    records: dict[tuple[float, str], dict[str, Any]] = {}
    for scale, case in progress(jobs, desc=f"{model.name}: videos", unit="video"):
        records[(scale, case.clip_id)] = generated_case(generator, model, case, control[case.clip_id], scale,
                                                        config, folder)
    videos = None
    if "videos" in config.sections:
        rows = [records[(guidance, case.clip_id)] for case in cases]
        videos = {"n_cases": len(rows), "held_out": True, "guidance": guidance,
                  **video_sampling(config).record(), "steps": config.steps,
                  "seed": config.seed, "control": "the same video scored against the next case's clip's speech",
                  **summarise_cases(rows), "cases": rows,
                  "generation_seconds": spread([row["generation"]["seconds"] for row in rows])}
    sweep = None
    if "sweep" in config.sections:
        sweep_cases = cases[:config.sweep_cases]
        sweep = {"n_cases": len(sweep_cases), "held_out": True, "steps": config.steps,
                 **video_sampling(config).record(), "rows": []}
        for scale in config.sweep_guidance:
            rows = [records[(scale, case.clip_id)] for case in sweep_cases]
            sweep["rows"].append({"guidance": scale, "n_cases": len(rows), **summarise_cases(rows)})
    return videos, sweep


# ------------------------------------------------------------------------------------------------------ the command

def prepare(settings: MeasureSettings) -> tuple[HeldOutSet, list[CheckpointInfo], Path]:
    """Read and check the inputs (before anything costly starts); returns the held-out set, the checkpoints and the
    cache folder."""
    import torch

    held_out = read_held_out(settings.held_out)
    models = [describe_checkpoint(name, path) for name, path in settings.checkpoints.items()]
    for model in models:
        check_held_out(model, held_out)
        if not model.base:
            raise UserError(f"checkpoint {model.folder} names no base model")
    out = Path(settings.out)
    cache = out / CACHE_FOLDER
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    if settings.cpu_threads and torch.device(settings.device).type == "cpu":
        torch.set_num_threads(settings.cpu_threads)
    return held_out, models, cache


def report_header(settings: MeasureSettings, held_out: HeldOutSet, command: str | None) -> dict[str, Any]:
    return {"format_version": REPORT_FORMAT_VERSION, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command, "held_out": held_out.summary(), "device": settings.device}


def measure(config: MeasureConfig, command: str | None = None) -> dict[str, Any]:
    """Measure every checkpoint of ``config``; writes ``<out>/measure.json`` and ``<out>/measure.md``, returns the
    report (docs/toy.md, "Measuring")."""

    held_out, models, cache = prepare(config)
    report = report_header(config, held_out, command)
    report["settings"] = {**config.model_dump(mode="json", exclude={"checkpoints", "held_out", "out", "device"}),
                          "guidance": config.guidance if config.guidance is not None else default_guidance()}
    if "videos" in config.sections:
        report["ground_truth"] = ground_truth_videos(held_out, config, cache)
    report["checkpoints"] = {}
    for model in models:
        log.info("measuring %s: %s", model.name, model.folder)
        entry: dict[str, Any] = {"checkpoint": model.summary()}
        if "vae" in config.sections:
            entry["vae_ceiling"] = vae_section(model, held_out, config, cache)
        if "gain" in config.sections:
            entry["audio_gain"] = gain_section(model, held_out, config, cache)
        if "noise" in config.sections:
            entry["noise_levels"] = noise_section(model, held_out, config, cache)
        if {"videos", "sweep"} & set(config.sections):
            videos, sweep = videos_section(model, LazyGenerator(model, config.device), held_out, config, cache)
            if videos is not None:
                entry["videos"] = videos
            if sweep is not None:
                entry["guidance_sweep"] = sweep
        report["checkpoints"][model.name] = entry
    report["comparison"] = comparison_rows(report)
    out = Path(config.out)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MARKDOWN, render_measure_report(report))
    log.info("report: %s and %s", out / REPORT_JSON, out / REPORT_MARKDOWN)
    return report
