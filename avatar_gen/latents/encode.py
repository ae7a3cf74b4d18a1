"""Stage 2: encode every clip into LTX-Video VAE latents, chunk by chunk, resumable and shardable.

Outputs in ``output_dir`` (DESIGN.md):
- ``<clip>_<k>.pt``   ``{"latents": [C, F', h, w]}`` raw posterior mean in the VAE's dtype;
- ``<clip>_<k>.json`` chunk metadata; written after the ``.pt``, so its presence marks the chunk complete;
- ``_clips/<clip>.json`` per-clip state (done / partial / skipped, frame count, crop, dropped tail);
- ``_skipped.json`` the clips that were skipped or only partly encoded, with reasons (rebuilt from
  ``_clips/`` at the end of each run, so concurrent shards never lose each other's entries).

A worker thread decodes and crops the next chunks (bounded queue) while the model encodes the current
batch; ``prefetch=0`` decodes in line, for comparison.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from avatar_gen.config import StrictModel
from avatar_gen.errors import MediaError, UserError, first_line
from avatar_gen.layout import VAE_SKIPPED_FILE
from avatar_gen.latents.chunks import Chunk, ClipReport, stream_chunks
from avatar_gen.latents.sources import ClipSource, absolute, collect_clips, recorded_path, select_shard
from avatar_gen.latents.vae import DEFAULT_PRETRAINED, LoadedVae, encode_frames, latent_shape, load_vae, vae_compression
from avatar_gen.media.video import probe_video
from avatar_gen.utils.io import atomic_path, atomic_write_json, read_json, remove_stale_temporaries
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

CLIP_STATE_DIR = "_clips"
# Fields of a chunk's JSON that must match the current settings for the chunk to count as done.
_MATCHED_FIELDS = ("clip_id", "chunk", "video_path", "start_frame", "num_frames", "fps", "height", "width")
_MATCHED_VAE_FIELDS = ("name_or_path", "revision", "dtype")


class LatentsConfig(StrictModel):
    """Settings of one run of the VAE-latents stage (CLI flags of preprocessing/save_vae_latents.py)."""

    inputs: Path | None = Field(None, description="a video file or a folder of videos (searched recursively)")
    transcripts: Path | None = Field(None, description="the scraper's video_transcripts.json: encode only its clips")
    output_dir: Path
    pretrained: str = Field(DEFAULT_PRETRAINED, description="hub id, diffusers pipeline folder or VAE folder")
    revision: str | None = None
    height: int = Field(768, ge=1, description="pixels, a multiple of the VAE's spatial compression (LTX: 32); "
                                                "portrait half-body default")
    width: int = Field(512, ge=1, description="pixels, a multiple of the VAE's spatial compression (LTX: 32)")
    num_frames: int = Field(97, ge=1, description="frames per chunk, t k + 1 for the VAE's temporal compression t "
                                                  "(LTX: 8k + 1, 97 = 3.88 s at 25 fps; t = 1: any count)")
    fps: float = Field(25.0, gt=0, le=240)
    stride: int | None = Field(None, ge=1, description="frames between chunk starts; default num_frames")
    batch_size: int = Field(1, ge=1)
    dtype: Literal["bf16", "fp32"] = "bf16"
    device: str | None = Field(None, description="torch device; default cuda when available, else cpu")
    tiling: bool = False
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1)
    overwrite: bool = False
    prefetch: int = Field(2, ge=0, description="batches decoded ahead by a worker thread; 0 = decode in line")

    @model_validator(mode="after")
    def _check_together(self) -> LatentsConfig:
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard index {self.shard_index} must be below the shard count {self.shard_count}")
        if self.inputs is None and self.transcripts is None:
            raise ValueError("give inputs (a video folder or file) and/or transcripts (the scraper's records)")
        return self

    def check_geometry(self, temporal: int, spatial: int, vae_name: str) -> None:
        """UserError (one line) unless the chunk size fits a VAE that compresses ``temporal`` x in time and ``spatial``
        x in space: sides multiples of ``spatial``, ``temporal`` k + 1 frames.  Checked once the VAE is loaded."""
        problems = []
        if self.height % spatial or self.width % spatial:
            problems.append(f"--height {self.height} and --width {self.width} must be multiples of {spatial}")
        if (self.num_frames - 1) % temporal:
            problems.append(f"--num_frames {self.num_frames} must be {temporal}k+1 "
                            f"({', '.join(str(temporal * k + 1) for k in range(1, 4))}, ...)")
        if problems:
            raise UserError(f"{'; '.join(problems)}: the VAE {vae_name} compresses {spatial}x in space and "
                            f"{temporal}x in time")

    @property
    def chunk_stride(self) -> int:
        return self.stride or self.num_frames

    @property
    def data_root(self) -> Path:
        """Recorded video paths are relative to this folder: the one holding the output folder."""
        return absolute(self.output_dir).parent


@dataclass
class RunSummary:
    clips: int = 0  # clips in this shard
    chunks_written: int = 0
    chunks_skipped_done: int = 0  # already complete from an earlier run
    clips_done: int = 0
    clips_already_finished: int = 0  # finished (done, skipped or partial) by an earlier run: not decoded again
    clips_skipped: int = 0
    clips_partial: int = 0
    frames_encoded: int = 0
    encode_seconds: float = 0.0  # wall time inside the VAE
    skipped: dict[str, str] = field(default_factory=dict)  # clip id -> reason


# ----------------------------------------------------------------------------------------------- state files


def chunk_key(clip_id: str, index: int) -> str:
    return f"{clip_id}_{index}"


def chunk_metadata(config: LatentsConfig, vae: LoadedVae, clip: ClipSource, chunk_index: int,
                   latent_channels: int) -> dict:
    """The ``<clip>_<k>.json`` record, exactly the fields of DESIGN.md (times in seconds from clip start)."""
    start_frame = chunk_index * config.chunk_stride
    return {
        "clip_id": clip.clip_id,
        "chunk": chunk_index,
        "video_path": recorded_path(clip.path, config.data_root),
        "start_frame": start_frame,
        "num_frames": config.num_frames,
        "fps": config.fps,
        "start_time": start_frame / config.fps,
        "end_time": (start_frame + config.num_frames) / config.fps,
        "height": config.height,
        "width": config.width,
        "latent_shape": latent_shape(latent_channels, config.num_frames, config.height, config.width,
                                     *vae_compression(vae.vae)),
        "vae": vae.metadata(),
    }


def _settings_match(record: dict | None, expected: dict) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("vae"), dict):
        return False
    return (all(record.get(name) == expected[name] for name in _MATCHED_FIELDS)
            and all(record["vae"].get(name) == expected["vae"][name] for name in _MATCHED_VAE_FIELDS))


def _read_json_or_none(path: Path) -> dict | None:
    try:
        return read_json(path)
    except (ValueError, OSError):
        return None  # a corrupt state file is redone, not fatal


def _file_stamp(path: Path) -> list[int] | None:
    """[size, mtime_ns] of a file (None when missing): a change means the clip is worth trying again."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _clip_settings(config: LatentsConfig, vae: LoadedVae) -> dict:
    """What a clip's state depends on: a different value means the clip is processed again."""
    return {"name_or_path": vae.name_or_path, "revision": vae.revision, "dtype": vae.dtype_name,
            "height": config.height, "width": config.width, "num_frames": config.num_frames, "fps": config.fps,
            "stride": config.chunk_stride}


class _Bookkeeper:
    """Knows which chunks and clips are done, writes chunk files and clip states."""

    def __init__(self, config: LatentsConfig, vae: LoadedVae):
        self.config = config
        self.vae = vae
        self.output_dir = config.output_dir
        self.state_dir = self.output_dir / CLIP_STATE_DIR
        self.latent_channels = int(vae.vae.config.latent_channels)
        self.settings = _clip_settings(config, vae)
        # Counted by the decoding side (one thread), read after it finishes.
        self.chunks_already_done = 0
        self.clips_already_finished = 0

    def expected_metadata(self, clip: ClipSource, index: int) -> dict:
        return chunk_metadata(self.config, self.vae, clip, index, self.latent_channels)

    def chunk_done(self, clip: ClipSource, index: int) -> bool:
        if self.config.overwrite:
            return False
        key = chunk_key(clip.clip_id, index)
        if not (self.output_dir / f"{key}.pt").is_file():
            return False
        return _settings_match(_read_json_or_none(self.output_dir / f"{key}.json"),
                               self.expected_metadata(clip, index))

    def chunk_wanted(self, clip: ClipSource, index: int) -> bool:
        """False (and counted) when chunk ``index`` of ``clip`` is complete from an earlier run."""
        if self.chunk_done(clip, index):
            self.chunks_already_done += 1
            return False
        return True

    def clip_state(self, clip: ClipSource) -> dict | None:
        return _read_json_or_none(self.state_dir / f"{clip.clip_id}.json")

    def clip_finished(self, clip: ClipSource) -> bool:
        """True when an earlier run finished this clip with these settings (and its chunks are all there)."""
        if self.config.overwrite:
            return False
        state = self.clip_state(clip)
        if not state or state.get("settings") != self.settings:
            return False
        # A clip that failed (skipped/partial) is retried only when its file changed: the same bytes fail again.
        if state.get("video_path") != recorded_path(clip.path, self.config.data_root):
            return False
        if state.get("file_stamp") != _file_stamp(clip.path):
            return False
        return all(self.chunk_done(clip, index) for index in range(int(state.get("chunks", 0))))

    def write_chunk(self, clip: ClipSource, index: int, latents: torch.Tensor) -> None:
        """``.pt`` first, then ``.json``: a chunk whose ``.json`` exists is complete."""
        key = chunk_key(clip.clip_id, index)
        metadata = self.expected_metadata(clip, index)
        if list(latents.shape) != metadata["latent_shape"]:
            raise RuntimeError(f"{key}: VAE gave latents {list(latents.shape)}, expected {metadata['latent_shape']}")
        json_path = self.output_dir / f"{key}.json"
        json_path.unlink(missing_ok=True)  # an old .json must not vouch for a new, half-written .pt
        with atomic_path(self.output_dir / f"{key}.pt") as tmp:
            # clone: a slice of the batch would save the whole batch's storage
            torch.save({"latents": latents.detach().to("cpu").clone().contiguous()}, tmp)
        atomic_write_json(json_path, metadata)

    def write_clip_state(self, clip: ClipSource, status: str, report: ClipReport | None, reason: str | None,
                         chunks: int) -> None:
        config = self.config
        state = {
            "clip_id": clip.clip_id,
            "video_path": recorded_path(clip.path, config.data_root),
            "status": status,  # done | partial | skipped
            "reason": reason,
            "chunks": chunks,
            "total_frames": report.total_frames if report else 0,
            "source_size": list(report.source_size) if report and report.source_size else None,
            "crop": list(report.crop) if report and report.crop else None,  # top, left, height, width (source px)
            "face_center": list(clip.face_center) if clip.face_center else None,
            "dropped_tail": report.dropped_tail(config.num_frames, config.chunk_stride) if report else None,
            "settings": self.settings,
            "file_stamp": _file_stamp(clip.path),
        }
        atomic_write_json(self.state_dir / f"{clip.clip_id}.json", state)

    def rebuild_skipped_file(self) -> list[dict]:
        """Collect every skipped/partial clip state into ``_skipped.json`` (all shards' entries)."""
        entries = []
        for path in sorted(self.state_dir.glob("*.json")):
            state = _read_json_or_none(path)
            if state and state.get("status") in ("skipped", "partial"):
                entries.append({key: state.get(key) for key in ("clip_id", "video_path", "status", "reason",
                                                                 "chunks", "total_frames")})
        atomic_write_json(self.output_dir / VAE_SKIPPED_FILE, entries)
        return entries


# ------------------------------------------------------------------------------------------ decoding side


@dataclass
class _ClipEnd:
    """Sent after a clip's last chunk: how decoding went."""

    clip: ClipSource
    report: ClipReport
    chunks: int  # complete chunks in the clip (encoded now or earlier)
    error: str | None
    already_finished: bool = False  # finished by an earlier run: not decoded, nothing to record


@dataclass
class _ChunkItem:
    clip: ClipSource
    chunk: Chunk


_STOP = object()


def _decode_clips(config: LatentsConfig, clips: list[ClipSource], book: _Bookkeeper) -> Iterator[object]:
    """Yield ``_ChunkItem`` for each chunk still to encode and one ``_ClipEnd`` per clip, in clip order."""
    stride = config.chunk_stride
    for clip in clips:
        if book.clip_finished(clip):
            book.clips_already_finished += 1
            yield _ClipEnd(clip, ClipReport(), 0, None, already_finished=True)
            continue
        report = ClipReport()
        error = None
        try:
            if not clip.path.is_file():
                raise MediaError(f"video file missing: {clip.path}")
            declared_seconds = probe_video(clip.path).duration  # raises for files without a readable video stream
            for chunk in stream_chunks(clip.path, clip.clip_id, config.fps, config.height, config.width,
                                       config.num_frames, stride, center=clip.face_center, report=report,
                                       wanted=lambda index, clip=clip: book.chunk_wanted(clip, index)):
                yield _ChunkItem(clip, chunk)
            error = _truncation(report.total_frames, declared_seconds, config.fps)
        except MediaError as exc:
            error = first_line(exc)
        except (OSError, ValueError, RuntimeError) as exc:  # anything else a broken file can make a decoder raise
            error = f"cannot decode {clip.path}: {exc.__class__.__name__}: {exc}"
        yield _ClipEnd(clip, report, len(report.chunk_starts(config.num_frames, stride)), error)


def _truncation(decoded_frames: int, declared_seconds: float, fps: float) -> str | None:
    """A reason when far fewer frames decoded than the container declares (a cut-off download or file).

    Decoders stop quietly at the end of the data they have, so this is how a truncated file shows.
    The margin (0.5 s or 5 %) absorbs rounding and containers whose declared duration is slightly off.
    """
    expected = int(declared_seconds * fps)
    if expected <= 0 or expected - decoded_frames <= max(0.5 * fps, 0.05 * expected):
        return None
    return (f"truncated or corrupt: decoded {decoded_frames} frames, the file declares {declared_seconds:.2f} s "
            f"(~{expected} frames at {fps:g} fps)")


def _prefetched(source: Iterator[object], capacity: int) -> Iterator[object]:
    """Run ``source`` in a worker thread, ``capacity`` items ahead; its exceptions re-raise here.

    Decoding (PyAV, OpenCV) releases the GIL, so it overlaps the VAE's forward pass.
    """
    items: queue.Queue = queue.Queue(maxsize=capacity)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_STOP)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            items.put(exc)

    worker = threading.Thread(target=work, name="vae-latents-decoder", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _STOP:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a worker waiting on a full queue
            with contextlib.suppress(queue.Empty):
                items.get_nowait()
            worker.join(timeout=0.1)


# ----------------------------------------------------------------------------------------------- the stage


def encode_dataset(config: LatentsConfig, loaded_vae: LoadedVae | None = None) -> RunSummary:
    """Run the stage: encode every clip of this shard, skipping finished chunks; return what happened.

    ``loaded_vae`` lets a caller (benchmark, tests) reuse a model already in memory; otherwise it is
    loaded once from ``config.pretrained``.
    """
    clips = collect_clips(config.inputs, config.transcripts)
    mine = select_shard(clips, config.shard_index, config.shard_count)
    log.info("%d clips, %d in shard %d/%d", len(clips), len(mine), config.shard_index, config.shard_count)
    vae = loaded_vae or load_vae(config.pretrained, config.revision, config.dtype, config.device, config.tiling)
    config.check_geometry(*vae_compression(vae.vae), vae.name_or_path)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(config.output_dir) + remove_stale_temporaries(config.output_dir / CLIP_STATE_DIR)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    book = _Bookkeeper(config, vae)
    summary = RunSummary(clips=len(mine))

    events = _decode_clips(config, mine, book)
    if config.prefetch > 0:
        events = _prefetched(events, capacity=config.prefetch * config.batch_size)
    batch: list[_ChunkItem] = []
    waiting_ends: list[_ClipEnd] = []  # clips whose last chunks are still in ``batch``

    def flush() -> None:
        if batch:
            _encode_batch(batch, vae, book, summary)
            batch.clear()
        for end in waiting_ends:
            _finish_clip(end, book, summary)
        waiting_ends.clear()

    bar = progress(total=len(mine), desc="vae latents", unit="clip")
    try:
        for event in events:
            if isinstance(event, _ChunkItem):
                batch.append(event)
                if len(batch) >= config.batch_size:
                    flush()
            elif not event.already_finished:
                waiting_ends.append(event)
                if not any(item.clip.clip_id == event.clip.clip_id for item in batch):
                    _finish_clip(event, book, summary)
                    waiting_ends.remove(event)
            if isinstance(event, _ClipEnd):
                bar.update(1)
        flush()
    finally:
        bar.close()
    summary.clips_already_finished = book.clips_already_finished
    summary.chunks_skipped_done = book.chunks_already_done
    entries = book.rebuild_skipped_file()
    log.info("wrote %d chunks (%d frames, %.1f s in the VAE); %d chunks and %d clips were finished by an earlier "
             "run; %d clips skipped, %d partial now; %d problem clips in all listed in %s", summary.chunks_written,
             summary.frames_encoded, summary.encode_seconds, summary.chunks_skipped_done,
             summary.clips_already_finished, summary.clips_skipped, summary.clips_partial, len(entries),
             config.output_dir / VAE_SKIPPED_FILE)
    return summary


def _encode_batch(batch: list[_ChunkItem], vae: LoadedVae, book: _Bookkeeper, summary: RunSummary) -> None:
    """Encode chunks of any clips together ([B, 3, F, H, W]) and write each one."""
    frames = np.stack([item.chunk.frames for item in batch])
    started = time.perf_counter()
    latents = encode_frames(vae.vae, frames)
    if latents.device.type == "cuda":
        torch.cuda.synchronize(latents.device)
    summary.encode_seconds += time.perf_counter() - started
    for item, chunk_latents in zip(batch, latents):
        book.write_chunk(item.clip, item.chunk.index, chunk_latents)
        summary.chunks_written += 1
        summary.frames_encoded += item.chunk.frames.shape[0]


def _finish_clip(end: _ClipEnd, book: _Bookkeeper, summary: RunSummary) -> None:
    config = book.config
    if end.error is not None:
        status, reason = ("partial" if end.chunks else "skipped"), end.error
    elif end.chunks == 0:
        status = "skipped"
        reason = (f"too short: {end.report.total_frames} frames at {config.fps:g} fps, a chunk needs "
                  f"{config.num_frames}")
    else:
        status, reason = "done", None
    if status == "done":
        summary.clips_done += 1
    elif status == "partial":
        summary.clips_partial += 1
    else:
        summary.clips_skipped += 1
    if reason:
        summary.skipped[end.clip.clip_id] = reason
        log.warning("%s %s: %s", status, end.clip.clip_id, reason)
    book.write_clip_state(end.clip, status, end.report, reason, end.chunks)
