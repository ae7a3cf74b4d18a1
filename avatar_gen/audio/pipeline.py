"""The audio-latents stage: per video chunk, 16 kHz speech for exactly its window and per-frame features.

Its files (``audio_wav/<key>.wav``, ``audio_latents/<key>_ff.npy`` and ``_text.json``, written last so that its
presence marks a complete chunk), audio sources and per-chunk faults are described in docs/audio_latents.md.  A chunk
that cannot be made is recorded and the run goes on; a re-run skips complete chunks and refuses to mix features of
another encoder or audio source into one folder unless ``overwrite``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from avatar_gen.audio.alignment import fit_speech_to_window, spoken_form, tts_aligned
from avatar_gen.audio.features import AudioEncoderSpec, AudioFeatureEncoder, load_audio_encoder
from avatar_gen.config import StrictModel
from avatar_gen.errors import MediaError, UserError
from avatar_gen.latents.sources import stable_shard
from avatar_gen.media.audio import SAMPLE_RATE, extract_audio, write_wav
from avatar_gen.media.video import probe_video
from avatar_gen.utils.datafiles import data_path, load_json, read_transcripts
from avatar_gen.utils.io import atomic_path, atomic_write_json, read_json, remove_stale_temporaries
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

AUDIO_SOURCES = ("original", "tts", "tts_aligned")
FEATURES_SUFFIX = "_ff.npy"
TEXT_SUFFIX = "_text.json"
FAILED_SUFFIX = "_failed.json"
# A chunk's text beyond this many characters cannot be its speech (a 10 s chunk holds ~200): refused.
MAX_CHUNK_TEXT_CHARS = 1000
# Faster than this (characters per second of window) is flagged: the transcript timing is suspect.
MAX_PLAUSIBLE_CHARS_PER_SECOND = 35.0
SILENT_AUDIO_RMS = 1e-4
_CHUNK_FIELDS = ("clip_id", "chunk", "num_frames", "fps", "start_time")
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class AudioLatentsConfig(StrictModel):
    """Everything the stage needs; built by preprocessing/save_text_latents.py from its flags."""

    latents_dir: Path = Field(description="the VAE stage's output: <clip>_<k>.json chunk records")
    transcripts: Path | None = Field(None, description="video_transcripts.json (needed for tts sources)")
    audio_out: Path
    ff_out: Path
    audio_source: Literal["original", "tts", "tts_aligned"] = "tts_aligned"
    tts_backend: Literal["espeak", "gtts"] = "espeak"
    voice: str = "en-us"
    encoder: AudioEncoderSpec = Field(default_factory=AudioEncoderSpec)
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    save_dtype: Literal["float32", "float16"] = "float32"
    batch_size: int = Field(8, ge=1)
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1)
    overwrite: bool = False

    @model_validator(mode="after")
    def _check(self) -> AudioLatentsConfig:
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard index {self.shard_index} must be below the shard count {self.shard_count}")
        if self.audio_source != "original" and self.transcripts is None:
            raise ValueError(f"audio_source {self.audio_source} needs transcripts (the text to speak)")
        return self

    @property
    def data_root(self) -> Path:
        """Chunk records give video paths relative to this folder (the one holding latents_dir)."""
        return self.latents_dir.resolve().parent

    def settings(self) -> dict[str, Any]:
        """What makes two runs' outputs interchangeable (compared on resume)."""
        return {"audio_source": self.audio_source, "tts": self.tts_settings(),
                "encoder": self.encoder.model_dump(exclude={"feature_dim"})}

    def tts_settings(self) -> dict[str, str] | None:
        return None if self.audio_source == "original" else {"backend": self.tts_backend, "voice": self.voice}


@dataclass
class Chunk:
    """One chunk record of the VAE stage."""

    key: str
    clip_id: str
    index: int
    num_frames: int
    fps: float
    start_time: float
    video_path: str | None
    record: dict[str, Any]

    @property
    def duration(self) -> float:
        """Seconds of the window: exactly ``num_frames`` frames."""
        return self.num_frames / self.fps


@dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    skipped_existing: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    flagged: dict[str, list[str]] = field(default_factory=dict)
    bad_records: dict[str, str] = field(default_factory=dict)


class ChunkFailure(Exception):
    """This chunk cannot be made; the message is recorded in its ``_failed.json``."""


def read_chunks(latents_dir: Path) -> tuple[list[Chunk], dict[str, str]]:
    """Chunk records in ``latents_dir`` (``<clip>_<k>.json``; files starting with ``_`` are bookkeeping).

    Returns the chunks sorted by key and ``{file name: reason}`` for records that cannot be used."""
    if not latents_dir.is_dir():
        raise UserError(f"--latents_dir not found or not a folder: {latents_dir}")
    chunks, bad = [], {}
    for path in sorted(latents_dir.glob("*.json")):
        if path.name.startswith(("_", ".")):
            continue
        try:
            record = load_json(path, "chunk record")
        except UserError as exc:
            bad[path.name] = str(exc)
            continue
        missing = [name for name in _CHUNK_FIELDS if not isinstance(record, dict) or name not in record]
        if missing:
            bad[path.name] = f"chunk record lacks {', '.join(missing)}"
            continue
        try:
            chunk = Chunk(key=path.stem, clip_id=str(record["clip_id"]), index=int(record["chunk"]),
                          num_frames=int(record["num_frames"]), fps=float(record["fps"]),
                          start_time=float(record["start_time"]), video_path=record.get("video_path"),
                          record=record)
        except (TypeError, ValueError) as exc:
            bad[path.name] = f"chunk record has a malformed field: {exc}"
            continue
        if chunk.num_frames < 1 or chunk.fps <= 0 or chunk.start_time < 0:
            bad[path.name] = f"chunk record has num_frames={chunk.num_frames}, fps={chunk.fps}, " \
                             f"start_time={chunk.start_time}"
            continue
        chunks.append(chunk)
    return chunks, bad


def load_transcripts(path: Path | None) -> dict[str, dict[str, Any]]:
    """``video_transcripts.json`` as ``{clip_id: record}``."""
    if path is None:
        return {}
    if not path.is_file():
        raise UserError(f"--transcripts not found: {path}")
    return {record["clip_id"]: record for record in read_transcripts(path, "--transcripts")}


def _segment_words(segment: dict[str, Any]) -> list[dict[str, Any]]:
    """A segment's words; a segment with text but no word times gets its words spread over its span in
    proportion to their length (an estimate)."""
    words = [word for word in segment.get("words") or []
             if isinstance(word, dict) and word.get("start") is not None and word.get("end") is not None
             and str(word.get("word", "")).strip()]
    if words:
        return [{"word": str(word["word"]).strip(), "start": float(word["start"]), "end": float(word["end"])}
                for word in words]
    tokens = str(segment.get("text", "")).split()
    if not tokens or segment.get("start") is None or segment.get("end") is None:
        return []
    start, end = float(segment["start"]), float(segment["end"])
    weights = np.array([max(1, len(spoken_form(token))) for token in tokens], dtype=np.float64)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [{"word": token, "start": float(edges[i]), "end": float(edges[i + 1])} for i, token in enumerate(tokens)]


def words_in_window(transcript: dict[str, Any], start: float, duration: float) -> list[dict[str, Any]]:
    """Words of ``transcript`` (a video_transcripts.json record) that overlap ``[start, start + duration)``,
    with times relative to ``start`` (a word crossing an edge keeps its true, out-of-window time)."""
    end = start + duration
    chosen = []
    for segment in transcript.get("transcript") or []:
        if not isinstance(segment, dict):
            continue
        for word in _segment_words(segment):
            if word["end"] > start and word["start"] < end and word["end"] > word["start"]:
                chosen.append({"word": word["word"], "start": round(word["start"] - start, 4),
                               "end": round(word["end"] - start, 4)})
    return sorted(chosen, key=lambda word: word["start"])


@functools.lru_cache(maxsize=64)
def _has_audio_stream(video_path: str) -> bool:
    return probe_video(video_path).has_audio


class AudioLatentsStage:
    """Runs the stage for one config (see :func:`save_audio_latents`)."""

    def __init__(self, config: AudioLatentsConfig, encoder: AudioFeatureEncoder | None = None):
        if encoder is not None and encoder.spec.model_dump(exclude={"feature_dim"}) != \
                config.encoder.model_dump(exclude={"feature_dim"}):
            raise ValueError(f"the encoder given ({encoder.spec}) is not the one the config names ({config.encoder})")
        self.config = config
        self.transcripts = load_transcripts(config.transcripts)
        self._encoder = encoder

    # ------------------------------------------------------------------ files
    def paths(self, key: str) -> dict[str, Path]:
        return {"wav": self.config.audio_out / f"{key}.wav",
                "features": self.config.ff_out / f"{key}{FEATURES_SUFFIX}",
                "text": self.config.ff_out / f"{key}{TEXT_SUFFIX}",
                "failed": self.config.ff_out / f"{key}{FAILED_SUFFIX}"}

    def is_done(self, chunk: Chunk) -> bool:
        """Complete with this run's settings.  Raises UserError when complete with *other* settings
        (unless overwriting): one folder must not mix features of different encoders or sources."""
        paths = self.paths(chunk.key)
        if not (paths["text"].is_file() and paths["features"].is_file() and paths["wav"].is_file()):
            return False
        if self.config.overwrite:
            return False
        try:
            record = read_json(paths["text"])
        except (OSError, ValueError, RecursionError):
            return False
        expected = self.config.settings()
        found = {"audio_source": record.get("audio_source"), "tts": record.get("tts"),
                 "encoder": {k: v for k, v in (record.get("encoder") or {}).items() if k != "feature_dim"}}
        if found != expected:
            raise UserError(f"{paths['text']} was made with {json.dumps(found)}, this run asks for "
                            f"{json.dumps(expected)}: pass --overwrite to redo, or use another --ff_out")
        return record.get("num_frames") == chunk.num_frames and record.get("fps") == chunk.fps

    @property
    def encoder(self) -> AudioFeatureEncoder:
        if self._encoder is None:
            self._encoder = load_audio_encoder(self.config.encoder, self.config.device,
                                               _TORCH_DTYPES[self.config.dtype])
        return self._encoder

    # ------------------------------------------------------------------ audio
    def _video_path(self, chunk: Chunk) -> Path:
        """The chunk's video: the chunk record's path (relative to the data root), else the transcript's (relative to
        the transcripts' folder); a path leading outside its root is refused (see :func:`data_path`)."""
        named = []
        if chunk.video_path:
            named.append((chunk.video_path, self.config.data_root, "the chunk record's video_path"))
        transcript = self.transcripts.get(chunk.clip_id)
        if transcript and transcript.get("video_path") and self.config.transcripts is not None:
            named.append((transcript["video_path"], self.config.transcripts.resolve().parent,
                          "the transcript's video_path"))
        candidates, refused = [], []
        for recorded, root, what in named:
            try:
                candidates.append(data_path(recorded, root, what))
            except UserError as exc:
                refused.append(str(exc))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        if refused:
            raise ChunkFailure(refused[0])
        raise ChunkFailure(f"video not found: {', '.join(map(str, candidates)) or 'the chunk record names none'}")

    def _original_audio(self, chunk: Chunk) -> np.ndarray:
        video = self._video_path(chunk)
        try:
            if not _has_audio_stream(str(video)):
                raise ChunkFailure(f"no audio stream in {video}")
            return extract_audio(video, SAMPLE_RATE, start=chunk.start_time, duration=chunk.duration)
        except MediaError as exc:
            raise ChunkFailure(f"cannot read the audio of {video}: {exc}") from None

    def _speak(self, text: str) -> np.ndarray:
        from avatar_gen.audio.tts import synthesize

        try:
            return synthesize(text, backend=self.config.tts_backend, voice=self.config.voice,
                              sample_rate=SAMPLE_RATE).audio
        except (UserError, RuntimeError, OSError) as exc:
            raise ChunkFailure(f"TTS ({self.config.tts_backend}, voice {self.config.voice}) failed: {exc}") from None

    def prepare(self, chunk: Chunk) -> tuple[np.ndarray, dict[str, Any]]:
        """The chunk's 16 kHz audio (exactly its window) and its ``_text.json`` record (without features)."""
        config = self.config
        transcript = self.transcripts.get(chunk.clip_id)
        flags: list[str] = []
        notes: dict[str, Any] = {}
        if transcript is None:
            if config.audio_source != "original":
                raise ChunkFailure(f"clip {chunk.clip_id} is not in the transcripts: no text to speak")
            flags.append("no_transcript")
            words: list[dict[str, Any]] = []
        else:
            words = words_in_window(transcript, chunk.start_time, chunk.duration)
            if not words:
                flags.append("empty_window")
        text = " ".join(word["word"] for word in words)
        if len(text) > MAX_CHUNK_TEXT_CHARS:
            if config.audio_source != "original":
                raise ChunkFailure(f"text of {len(text)} characters for a {chunk.duration:.2f} s window "
                                   f"(limit {MAX_CHUNK_TEXT_CHARS}): the transcript cannot be right")
            flags.append("text_too_long")
        if text and not text.isascii():
            flags.append("non_ascii_text")
        if len(text) / chunk.duration > MAX_PLAUSIBLE_CHARS_PER_SECOND:
            flags.append("text_too_fast")
        num_samples = int(round(chunk.duration * SAMPLE_RATE))
        if config.audio_source == "original":
            audio = self._original_audio(chunk)
        elif not words:
            audio = np.zeros(num_samples, dtype=np.float32)
            notes["tts"] = "no words in the window: silence"
        elif config.audio_source == "tts":
            first_start = max(0.0, min(word["start"] for word in words))
            audio, notes["fit"] = fit_speech_to_window(self._speak(text), chunk.duration, first_start)
        else:
            aligned = tts_aligned(words, chunk.duration, self._speak)
            audio = aligned.audio
            notes["alignment"] = aligned.summary()
        audio = np.asarray(audio, dtype=np.float32)[:num_samples]
        if audio.size < num_samples:
            audio = np.pad(audio, (0, num_samples - audio.size))
        if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENT_AUDIO_RMS:
            flags.append("silent_audio")
        record = {
            "key": chunk.key, "clip_id": chunk.clip_id, "chunk": chunk.index,
            "text": text, "words": words,
            "audio_source": config.audio_source, "tts": config.tts_settings(),
            "fps": chunk.fps, "num_frames": chunk.num_frames,
            "start_time": chunk.start_time, "duration": round(chunk.duration, 6),
            "audio_wav": str(self.paths(chunk.key)["wav"].name), "sample_rate": SAMPLE_RATE,
            "flags": flags, "notes": notes,
        }
        return audio, record

    # ------------------------------------------------------------------ run
    def _fail(self, chunk: Chunk, reason: str, summary: RunSummary) -> None:
        log.warning("chunk %s: %s", chunk.key, reason)
        paths = self.paths(chunk.key)
        for stale in ("text", "features", "wav"):
            paths[stale].unlink(missing_ok=True)
        atomic_write_json(paths["failed"], {"key": chunk.key, "clip_id": chunk.clip_id, "reason": reason,
                                            **self.config.settings()})
        summary.failed[chunk.key] = reason

    def _process_batch(self, batch: list[Chunk], summary: RunSummary) -> None:
        ready: list[tuple[Chunk, np.ndarray, dict[str, Any]]] = []
        for chunk in batch:
            paths = self.paths(chunk.key)
            paths["text"].unlink(missing_ok=True)  # an old record must not vouch for new, partial files
            try:
                audio, record = self.prepare(chunk)
            except ChunkFailure as exc:
                self._fail(chunk, str(exc), summary)
                continue
            write_wav(paths["wav"], audio, SAMPLE_RATE)
            ready.append((chunk, audio, record))
        if not ready:
            return
        first = ready[0][0]
        features = self.encoder.encode_batch([audio for _, audio, _ in ready], first.num_frames, first.fps)
        save_dtype = np.float16 if self.config.save_dtype == "float16" else np.float32
        for (chunk, _, record), rows in zip(ready, features):
            paths = self.paths(chunk.key)
            with atomic_path(paths["features"]) as tmp:
                np.save(tmp, rows.astype(save_dtype))
            record["encoder"] = self.encoder.spec.model_dump()
            record["feature_shape"] = list(rows.shape)
            record["feature_dtype"] = self.config.save_dtype
            atomic_write_json(paths["text"], record)
            paths["failed"].unlink(missing_ok=True)
            summary.done += 1
            if record["flags"]:
                summary.flagged[chunk.key] = record["flags"]

    def run(self) -> RunSummary:
        config = self.config
        chunks, bad = read_chunks(config.latents_dir)
        summary = RunSummary(bad_records=bad)
        for name, reason in bad.items():
            log.warning("%s: %s (skipped)", name, reason)
        mine = [chunk for chunk in chunks if stable_shard(chunk.key, config.shard_count) == config.shard_index]
        summary.total = len(mine)
        for folder in (config.audio_out, config.ff_out):
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder)
        pending = []
        for chunk in mine:
            if self.is_done(chunk):
                summary.skipped_existing += 1
            else:
                pending.append(chunk)
        log.info("%d chunks in shard %d/%d: %d done already, %d to make", len(mine), config.shard_index,
                 config.shard_count, summary.skipped_existing, len(pending))
        if not pending:
            return summary
        # One batch holds chunks of one length and rate (the encoder resamples them all alike).
        groups: dict[tuple[int, float], list[Chunk]] = {}
        for chunk in pending:
            groups.setdefault((chunk.num_frames, chunk.fps), []).append(chunk)
        with progress(total=len(pending), desc="audio latents", unit="chunk") as bar:
            for group in groups.values():
                for offset in range(0, len(group), config.batch_size):
                    batch = group[offset: offset + config.batch_size]
                    self._process_batch(batch, summary)
                    bar.update(len(batch))
        log.info("audio latents: %d made, %d already done, %d failed, %d flagged", summary.done,
                 summary.skipped_existing, len(summary.failed), len(summary.flagged))
        return summary


def save_audio_latents(config: AudioLatentsConfig, encoder: AudioFeatureEncoder | None = None) -> RunSummary:
    """Run the audio-latents stage (see the module docstring); ``encoder`` reuses an already loaded one."""
    return AudioLatentsStage(config, encoder).run()


_LAYERS_PATTERN = re.compile(r"^\s*-?\d+(\s*,\s*-?\d+)*\s*$")


def parse_layers(text: str) -> list[int]:
    """``"-1"`` or ``"1,2,3"`` -> list of hidden-state indices."""
    if not _LAYERS_PATTERN.match(text or ""):
        raise UserError(f"--layers must be comma-separated integers such as -1 or 1,2,3, got {text!r}")
    return [int(part) for part in text.split(",")]
