"""The audio-latents stage: per video chunk, 16 kHz speech for exactly its window and per-frame features.

A clip's chunks are cut from one speech, encoded once, as inference cuts a request's speech (``speech_features``).
Its files (``audio_wav/<key>.wav``, ``audio_latents/<key>_ff.npy`` and ``_text.json``, written last so that its
presence marks a complete chunk; ``audio_latents/silence/`` for guidance and audio dropout), audio sources and
per-chunk faults are described in docs/audio_latents.md.  A chunk that cannot be made is recorded and the run goes on;
a re-run skips complete chunks and refuses to mix features of another encoder or audio source into one folder unless
``overwrite``.
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
from avatar_gen.audio.features import (AudioEncoderSpec, AudioFeatureEncoder, load_audio_encoder, silence_features,
                                      speech_features_batch)
from avatar_gen.config import StrictModel
from avatar_gen.errors import MediaError, UserError
from avatar_gen.layout import AUDIO_FEATURES_SUFFIX, AUDIO_TEXT_SUFFIX, SILENCE_FOLDER, VAE_SKIPPED_FILE, silence_files
from avatar_gen.limits import MAX_SPEECH_SECONDS
from avatar_gen.latents.sources import stable_shard
from avatar_gen.media.audio import SAMPLE_RATE, extract_audio, write_wav
from avatar_gen.media.video import probe_video
from avatar_gen.utils.datafiles import data_path, load_json, read_transcripts
from avatar_gen.utils.io import atomic_path, atomic_write_json, read_json, remove_stale_temporaries
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

AUDIO_SOURCES = ("original", "tts", "tts_aligned")
FEATURES_SUFFIX = AUDIO_FEATURES_SUFFIX
TEXT_SUFFIX = AUDIO_TEXT_SUFFIX
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
    batch_size: int = Field(8, ge=1, description="clips whose speech has one length, encoded together")
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

    @property
    def start_frame(self) -> int:
        """The window's first frame on the clip's frame grid at ``fps`` (frame ``i`` at ``i / fps`` s)."""
        return int(round(self.start_time * self.fps))


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
    """Chunk records in ``latents_dir`` (``<clip>_<k>.json``; the VAE stage's ``_skipped.json`` is bookkeeping).

    Returns the chunks sorted by key and ``{file name: reason}`` for records that cannot be used."""
    if not latents_dir.is_dir():
        raise UserError(f"--latents_dir not found or not a folder: {latents_dir}")
    chunks, bad = [], {}
    for path in sorted(latents_dir.glob("*.json")):
        if path.name.startswith(".") or path.name == VAE_SKIPPED_FILE:
            # Only the known bookkeeping name: YouTube ids may start with _ (a toy clip _7k7UBfT2Mw was skipped once).
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


@dataclass
class ClipSpeech:
    """Chunks of one clip at one frame rate and the speech they are cut from, which the encoder hears at once.

    The speech starts at the first chunk's frame ``start_frame`` (the clip's start, for chunk 0) and lasts
    ``num_frames`` frames, to the end of the last chunk; a chunk's rows are rows ``chunk.start_frame - start_frame``
    onwards of its features (:func:`avatar_gen.audio.features.speech_features`), as inference cuts a request's speech.
    """

    clip_id: str
    fps: float
    chunks: list[Chunk]

    @property
    def start_frame(self) -> int:
        return self.chunks[0].start_frame

    @property
    def start_time(self) -> float:
        return self.start_frame / self.fps

    @property
    def num_frames(self) -> int:
        return max(chunk.start_frame + chunk.num_frames for chunk in self.chunks) - self.start_frame

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * SAMPLE_RATE))

    def window(self, chunk: Chunk) -> tuple[int, int]:
        """(first row, rows) of ``chunk`` in the speech's features."""
        return chunk.start_frame - self.start_frame, chunk.num_frames


def group_by_clip(chunks: list[Chunk], max_seconds: float = MAX_SPEECH_SECONDS) -> list[ClipSpeech]:
    """Chunks grouped by (clip, frame rate) in time order, each group one speech.  A clip longer than ``max_seconds``
    (what inference encodes at most: one request's speech) is cut into consecutive speeches of at most that length,
    so an hour-long local video never becomes one encoder input."""
    groups: dict[tuple[str, float], list[Chunk]] = {}
    for chunk in chunks:
        groups.setdefault((chunk.clip_id, chunk.fps), []).append(chunk)
    speeches = []
    for (clip_id, fps), members in sorted(groups.items()):
        current: list[Chunk] = []
        for chunk in sorted(members, key=lambda chunk: (chunk.start_frame, chunk.key)):
            if current and (chunk.start_frame + chunk.num_frames - current[0].start_frame) / fps > max_seconds:
                speeches.append(ClipSpeech(clip_id, fps, current))
                current = []
            current.append(chunk)
        speeches.append(ClipSpeech(clip_id, fps, current))
    return speeches


def silence_paths(ff_out: Path, num_frames: int, fps: float) -> dict[str, Path]:
    """Where the features of silence for chunks of ``num_frames`` frames at ``fps`` live (docs/audio_latents.md)."""
    features, text = silence_files(ff_out, num_frames, fps)
    return {"features": features, "text": text}


def write_silence_features(ff_out: Path, encoder: AudioFeatureEncoder, num_frames: int, fps: float,
                           save_dtype: str = "float32") -> Path:
    """Write ``ff_out/silence/<num_frames>f_<fps>fps_ff.npy`` (+ ``_text.json`` naming the encoder): the features
    inference feeds as the guidance negative for such a chunk (:func:`silence_features`), which the trainer's audio
    dropout puts in place of a sample's speech.  Returns the ``.npy`` path."""
    paths = silence_paths(ff_out, num_frames, fps)
    rows = silence_features(encoder, num_frames, fps)
    with atomic_path(paths["features"]) as tmp:
        np.save(tmp, rows.astype(np.float16 if save_dtype == "float16" else np.float32))
    atomic_write_json(paths["text"], {"what": "features of silence (the guidance negative; audio dropout)",
                                      "encoder": encoder.spec.model_dump(), "fps": fps, "num_frames": num_frames,
                                      "feature_shape": list(rows.shape), "feature_dtype": save_dtype})
    return paths["features"]


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

    def is_done(self, chunk: Chunk, clip: ClipSpeech) -> bool:
        """Complete with this run's settings, from the speech ``clip`` covers now.  Raises UserError when complete
        with *other* settings (unless overwriting): one folder must not mix features of different encoders or
        sources.  A clip whose chunks grew (the VAE stage added one) is redone: its speech is longer now."""
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
        return (record.get("num_frames") == chunk.num_frames and record.get("fps") == chunk.fps
                and record.get("clip_speech") == self.clip_speech_record(clip))

    @staticmethod
    def clip_speech_record(clip: ClipSpeech) -> dict[str, Any]:
        """What every chunk's ``_text.json`` says about the speech its features were cut from."""
        return {"start_frame": clip.start_frame, "num_frames": clip.num_frames, "fps": clip.fps}

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

    def _original_audio(self, clip: ClipSpeech) -> np.ndarray:
        video = self._video_path(clip.chunks[0])
        try:
            if not _has_audio_stream(str(video)):
                raise ChunkFailure(f"no audio stream in {video}")
            return extract_audio(video, SAMPLE_RATE, start=clip.start_time, duration=clip.duration)
        except MediaError as exc:
            raise ChunkFailure(f"cannot read the audio of {video}: {exc}") from None

    def _speak(self, text: str) -> np.ndarray:
        from avatar_gen.audio.tts import synthesize

        try:
            return synthesize(text, backend=self.config.tts_backend, voice=self.config.voice,
                              sample_rate=SAMPLE_RATE).audio
        except (UserError, RuntimeError, OSError) as exc:
            raise ChunkFailure(f"TTS ({self.config.tts_backend}, voice {self.config.voice}) failed: {exc}") from None

    def clip_audio(self, clip: ClipSpeech) -> tuple[np.ndarray, dict[str, Any]]:
        """The 16 kHz speech of ``clip`` (``clip.duration`` s from ``clip.start_time``) and notes on how it was made.

        original: the video's sound track; tts: the text of all its chunks' windows spoken once and fitted to the
        span; tts_aligned: every word of the span synthesised and placed at its transcript time.  Raises
        ChunkFailure when no chunk of the clip can be made (no video, no text, TTS failure, absurd text).
        """
        config = self.config
        transcript = self.transcripts.get(clip.clip_id)
        notes: dict[str, Any] = {}
        if config.audio_source == "original":
            audio = self._original_audio(clip)
        else:
            if transcript is None:
                raise ChunkFailure(f"clip {clip.clip_id} is not in the transcripts: no text to speak")
            for chunk in clip.chunks:
                text = " ".join(word["word"] for word in words_in_window(transcript, chunk.start_time,
                                                                          chunk.duration))
                if len(text) > MAX_CHUNK_TEXT_CHARS:
                    raise ChunkFailure(f"text of {len(text)} characters for the {chunk.duration:.2f} s window of "
                                       f"chunk {chunk.key} (limit {MAX_CHUNK_TEXT_CHARS}): the transcript cannot "
                                       f"be right")
            words = words_in_window(transcript, clip.start_time, clip.duration)
            if not words:
                audio = np.zeros(clip.num_samples, dtype=np.float32)
                notes["tts"] = "no words in the clip's chunks: silence"
            elif config.audio_source == "tts":
                first_start = max(0.0, min(word["start"] for word in words))
                text = " ".join(word["word"] for word in words)
                audio, notes["fit"] = fit_speech_to_window(self._speak(text), clip.duration, first_start)
            else:
                aligned = tts_aligned(words, clip.duration, self._speak)
                audio = aligned.audio
                notes["alignment"] = aligned.summary()
        audio = np.asarray(audio, dtype=np.float32)[:clip.num_samples]
        return np.pad(audio, (0, clip.num_samples - audio.size)), notes

    def chunk_record(self, chunk: Chunk, clip: ClipSpeech, audio: np.ndarray,
                     notes: dict[str, Any]) -> dict[str, Any]:
        """The chunk's ``_text.json`` record (without the feature fields) for its slice ``audio`` of the clip."""
        config = self.config
        transcript = self.transcripts.get(chunk.clip_id)
        flags: list[str] = []
        if transcript is None:
            flags.append("no_transcript")
            words: list[dict[str, Any]] = []
        else:
            words = words_in_window(transcript, chunk.start_time, chunk.duration)
            if not words:
                flags.append("empty_window")
        text = " ".join(word["word"] for word in words)
        if len(text) > MAX_CHUNK_TEXT_CHARS:
            flags.append("text_too_long")
        if text and not text.isascii():
            flags.append("non_ascii_text")
        if len(text) / chunk.duration > MAX_PLAUSIBLE_CHARS_PER_SECOND:
            flags.append("text_too_fast")
        if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENT_AUDIO_RMS:
            flags.append("silent_audio")
        return {
            "key": chunk.key, "clip_id": chunk.clip_id, "chunk": chunk.index,
            "text": text, "words": words,
            "audio_source": config.audio_source, "tts": config.tts_settings(),
            "fps": chunk.fps, "num_frames": chunk.num_frames,
            "start_time": chunk.start_time, "duration": round(chunk.duration, 6),
            "audio_wav": str(self.paths(chunk.key)["wav"].name), "sample_rate": SAMPLE_RATE,
            "clip_speech": self.clip_speech_record(clip), "flags": flags, "notes": dict(notes),
        }

    # ------------------------------------------------------------------ run
    def _fail(self, chunk: Chunk, reason: str, summary: RunSummary) -> None:
        log.warning("chunk %s: %s", chunk.key, reason)
        paths = self.paths(chunk.key)
        for stale in ("text", "features", "wav"):
            paths[stale].unlink(missing_ok=True)
        atomic_write_json(paths["failed"], {"key": chunk.key, "clip_id": chunk.clip_id, "reason": reason,
                                            **self.config.settings()})
        summary.failed[chunk.key] = reason

    def _process_batch(self, batch: list[tuple[ClipSpeech, list[Chunk]]], summary: RunSummary) -> None:
        """Make the chunks ``todo`` of clips whose speech has one length (so they encode as one batch): each clip's
        whole speech is made and encoded once, and every chunk gets its slice of both."""
        ready: list[tuple[ClipSpeech, list[Chunk], np.ndarray, dict[str, Any]]] = []
        for clip, todo in batch:
            for chunk in todo:
                self.paths(chunk.key)["text"].unlink(missing_ok=True)  # an old record must not vouch for new files
            try:
                audio, notes = self.clip_audio(clip)
            except ChunkFailure as exc:
                for chunk in todo:
                    self._fail(chunk, str(exc), summary)
                continue
            ready.append((clip, todo, audio, notes))
        if not ready:
            return
        features = speech_features_batch(self.encoder, [audio for _, _, audio, _ in ready],
                                         [[clip.window(chunk) for chunk in todo] for clip, todo, _, _ in ready],
                                         ready[0][0].fps, ready[0][0].num_frames)
        save_dtype = np.float16 if self.config.save_dtype == "float16" else np.float32
        for (clip, todo, audio, notes), chunk_rows in zip(ready, features):
            for chunk, rows in zip(todo, chunk_rows):
                paths = self.paths(chunk.key)
                num_samples = int(round(chunk.duration * SAMPLE_RATE))
                start_sample = int(round((chunk.start_time - clip.start_time) * SAMPLE_RATE))
                window = audio[start_sample:start_sample + num_samples]
                window = np.pad(window, (0, num_samples - window.size))
                record = self.chunk_record(chunk, clip, window, notes)
                write_wav(paths["wav"], window, SAMPLE_RATE)
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
        # Shards by clip: a clip's chunks are cut from one encoding of its speech.
        clips = [clip for clip in group_by_clip(chunks)
                 if stable_shard(clip.clip_id, config.shard_count) == config.shard_index]
        summary.total = sum(len(clip.chunks) for clip in clips)
        for folder in (config.audio_out, config.ff_out, config.ff_out / SILENCE_FOLDER):
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder)
        pending: list[tuple[ClipSpeech, list[Chunk]]] = []  # a clip and its chunks still to make
        for clip in clips:
            todo = [chunk for chunk in clip.chunks if not self.is_done(chunk, clip)]
            summary.skipped_existing += len(clip.chunks) - len(todo)
            if todo:
                pending.append((clip, todo))
        log.info("%d chunks of %d clips in shard %d/%d: %d done already, %d to make", summary.total, len(clips),
                 config.shard_index, config.shard_count, summary.skipped_existing,
                 summary.total - summary.skipped_existing)
        self._write_silence({(chunk.num_frames, chunk.fps) for clip in clips for chunk in clip.chunks})
        if not pending:
            return summary
        # One batch holds clips whose speech has one length and rate: the encoder sees them exactly as alone.
        groups: dict[tuple[int, float], list[tuple[ClipSpeech, list[Chunk]]]] = {}
        for clip, todo in pending:
            groups.setdefault((clip.num_samples, clip.fps), []).append((clip, todo))
        with progress(total=summary.total - summary.skipped_existing, desc="audio latents", unit="chunk") as bar:
            for group in groups.values():
                for offset in range(0, len(group), config.batch_size):
                    batch = group[offset: offset + config.batch_size]
                    self._process_batch(batch, summary)
                    bar.update(sum(len(todo) for _, todo in batch))
        log.info("audio latents: %d made, %d already done, %d failed, %d flagged", summary.done,
                 summary.skipped_existing, len(summary.failed), len(summary.flagged))
        return summary

    def _write_silence(self, lengths: set[tuple[int, float]]) -> None:
        """The features of silence for every chunk length and rate of this shard (cheap; redone when missing or
        made by another encoder)."""
        for num_frames, fps in sorted(lengths):
            paths = silence_paths(self.config.ff_out, num_frames, fps)
            try:
                recorded = read_json(paths["text"]) if paths["features"].is_file() else None
            except (OSError, ValueError):
                recorded = None
            same_encoder = recorded is not None and {k: v for k, v in (recorded.get("encoder") or {}).items()
                                                     if k != "feature_dim"} == self.config.settings()["encoder"]
            if not same_encoder or self.config.overwrite:
                write_silence_features(self.config.ff_out, self.encoder, num_frames, fps, self.config.save_dtype)


def save_audio_latents(config: AudioLatentsConfig, encoder: AudioFeatureEncoder | None = None) -> RunSummary:
    """Run the audio-latents stage (see the module docstring); ``encoder`` reuses an already loaded one."""
    return AudioLatentsStage(config, encoder).run()


_LAYERS_PATTERN = re.compile(r"^\s*-?\d+(\s*,\s*-?\d+)*\s*$")


def parse_layers(text: str) -> list[int]:
    """``"-1"`` or ``"1,2,3"`` -> list of hidden-state indices."""
    if not _LAYERS_PATTERN.match(text or ""):
        raise UserError(f"--layers must be comma-separated integers such as -1 or 1,2,3, got {text!r}")
    return [int(part) for part in text.split(",")]
