"""Training data: VAE latents paired with per-frame audio features, a stable held-out split, a resumable sampler.

Inputs (DESIGN.md): ``vae_latents/<key>.pt`` (``{"latents": [C, F', h, w]}``) + ``<key>.json`` and
``audio_latents/<key>_ff.npy`` ([num_frames, D]) + ``<key>_text.json``.  Pairs are made by key; a chunk without
audio features, audio rows != the chunk's ``num_frames``, a feature width != ``audio.feature_dim``, or a file that
cannot be read (empty, cut short, without ``latents``, holding Python objects, latents of another shape than its JSON
says) is an error listing examples, before any training starts: a bad file never stops a run midway (nor every resume).

Held-out split: a *clip* (all its chunks) is held out when ``held_out_score(clip_id) < held_out_fraction``, where
the score is a SHA-1 hash of the clip id mapped to [0, 1).  Stable as the data grows, and chunks of one clip never
straddle the split.  The trainer records the split in ``<run>/data_split.json`` (:func:`split_records`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from avatar_gen.errors import UserError
from avatar_gen.latents.vae import normalize_latents
from avatar_gen.layout import AUDIO_FEATURES_SUFFIX, AUDIO_TEXT_SUFFIX, silence_files
from avatar_gen.utils.datafiles import load_array_file, load_json, load_tensor_file
from avatar_gen.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

MAX_LISTED = 5


def held_out_score(clip_id: str) -> float:
    """Stable pseudo-random number in [0, 1) for ``clip_id`` (first 8 bytes of its SHA-1)."""
    digest = hashlib.sha1(clip_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_clips(clip_ids: list[str], held_out_fraction: float) -> tuple[list[str], list[str]]:
    """(train clip ids, held-out clip ids).  With a fraction > 0 and >= 2 clips at least one clip is held out
    (the lowest score) and at least one kept for training."""
    unique = sorted(set(clip_ids))
    held_out = [clip for clip in unique if held_out_score(clip) < held_out_fraction]
    if held_out_fraction > 0 and len(unique) >= 2:
        if not held_out:
            held_out = [min(unique, key=held_out_score)]
        if len(held_out) == len(unique):
            held_out.remove(max(held_out, key=held_out_score))
    held = set(held_out)
    return [clip for clip in unique if clip not in held], sorted(held)


@dataclass(frozen=True)
class ChunkRecord:
    """One training chunk: where its files are and what its JSON says."""

    key: str
    clip_id: str
    latents_path: Path
    audio_path: Path | None  # None in an audio-free run
    num_frames: int
    fps: float
    latent_shape: tuple[int, ...]
    height: int
    width: int
    vae: dict
    audio_encoder: dict | None


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def scan_chunks(vae_latents: Path, audio_latents: Path | None, feature_dim: int | None,
                allow_missing_audio: bool = False) -> list[ChunkRecord]:
    """Pair every complete ``<key>.pt`` + ``<key>.json`` with ``<key>_ff.npy``; raise UserError on any mismatch.

    ``audio_latents`` None (an audio-free run): the latents alone, records without audio.
    """
    vae_latents = Path(vae_latents)
    audio_latents = None if audio_latents is None else Path(audio_latents)
    for folder, what in ((vae_latents, "data.vae_latents"), (audio_latents, "data.audio_latents")):
        if folder is not None and not folder.is_dir():
            raise UserError(f"{what} folder not found: {folder}")
    records, missing_audio, frame_mismatch, dim_mismatch, bad_json, bad_files = [], [], [], [], [], []
    for meta_path in sorted(vae_latents.glob("*.json")):
        key = meta_path.stem
        latents_path = vae_latents / f"{key}.pt"
        if key.startswith(".") or not latents_path.is_file():
            continue  # a chunk still being written, or a stage state file
        try:
            meta = load_json(meta_path, "latents metadata")
            num_frames, latent_shape = int(meta["num_frames"]), tuple(int(v) for v in meta["latent_shape"])
            vae = meta["vae"]
            _ = vae["latents_mean"], vae["latents_std"]
        except UserError as exc:
            bad_json.append(f"{meta_path.name} ({exc})")
            continue
        except (ValueError, KeyError, TypeError) as exc:
            bad_json.append(f"{meta_path.name} ({type(exc).__name__}: {exc})")
            continue
        if audio_latents is None:
            try:
                check_latents_file(latents_path, latent_shape)
            except UserError as exc:
                bad_files.append(str(exc))
                continue
            records.append(_record(key, meta, latents_path, num_frames, latent_shape, vae, None, None))
            continue
        audio_path = audio_latents / f"{key}{AUDIO_FEATURES_SUFFIX}"
        if not audio_path.is_file():
            missing_audio.append(key)
            continue
        try:
            check_latents_file(latents_path, latent_shape)
            audio = load_array_file(audio_path, "audio features", mmap_mode="r")
        except UserError as exc:
            bad_files.append(str(exc))
            continue
        if audio.ndim != 2 or audio.shape[0] != num_frames:
            frame_mismatch.append(f"{key} (audio {list(audio.shape)}, chunk has {num_frames} frames)")
            continue
        if audio.shape[1] != feature_dim:
            dim_mismatch.append(f"{key} (D={audio.shape[1]})")
            continue
        text_path = audio_latents / f"{key}{AUDIO_TEXT_SUFFIX}"
        encoder = None
        if text_path.is_file():
            try:
                text_record = load_json(text_path, "audio record")
            except UserError as exc:
                bad_files.append(str(exc))
                continue
            encoder = text_record.get("encoder") if isinstance(text_record, dict) else None
        records.append(_record(key, meta, latents_path, num_frames, latent_shape, vae, audio_path, encoder))
    if bad_json:
        raise UserError(f"unreadable latent metadata in {vae_latents}: {_examples(bad_json)}")
    if bad_files:
        raise UserError(f"{len(bad_files)} unreadable data file(s); delete them (and their .json) and re-run the stage "
                        f"that wrote them: {_examples(bad_files)}")
    if frame_mismatch:
        raise UserError(f"audio rows != chunk num_frames for {len(frame_mismatch)} chunk(s): "
                        f"{_examples(frame_mismatch)}")
    if dim_mismatch:
        raise UserError(f"audio feature width != audio.feature_dim={feature_dim} for {len(dim_mismatch)} chunk(s): "
                        f"{_examples(dim_mismatch)}")
    if missing_audio:
        message = (f"{len(missing_audio)} chunk(s) in {vae_latents} have no {AUDIO_FEATURES_SUFFIX} in "
                   f"{audio_latents}: {_examples(missing_audio)}")
        if not allow_missing_audio:
            raise UserError(message + " (run the audio stage, or set data.allow_missing_audio: true to skip them)")
        log.warning("skipping %s", message)
    if not records:
        raise UserError(f"no training chunks: no <key>.pt + <key>.json in {vae_latents}"
                        + ("" if audio_latents is None else f" paired with {audio_latents}"))
    encoders = {json.dumps(record.audio_encoder, sort_keys=True) for record in records}
    if len(encoders) > 1:
        raise UserError(f"audio features come from {len(encoders)} different encoders: {_examples(sorted(encoders))}")
    return records


def _record(key: str, meta: dict, latents_path: Path, num_frames: int, latent_shape: tuple[int, ...], vae: dict,
            audio_path: Path | None, encoder: dict | None) -> ChunkRecord:
    return ChunkRecord(
        key=key, clip_id=str(meta.get("clip_id") or key.rsplit("_", 1)[0]), latents_path=latents_path,
        audio_path=audio_path, num_frames=num_frames, fps=float(meta.get("fps", 25.0)), latent_shape=latent_shape,
        height=int(meta.get("height", 0)), width=int(meta.get("width", 0)), vae=vae, audio_encoder=encoder)


def read_silence(audio_latents: Path, records: list[ChunkRecord]) -> dict[tuple[int, float], torch.Tensor]:
    """The features of silence [num_frames, D] for every (num_frames, fps) of ``records``, as the audio stage wrote
    them (``audio_latents/silence/``); UserError when one is missing or made by another encoder than the records'."""
    silence, problems = {}, []
    for num_frames, fps in sorted({(record.num_frames, record.fps) for record in records}):
        features_path, text_path = silence_files(audio_latents, num_frames, fps)
        if not (features_path.is_file() and text_path.is_file()):
            problems.append(f"{features_path} missing")
            continue
        try:
            recorded = load_json(text_path, "silence record")
            rows = torch.from_numpy(load_array_file(features_path, "silence features").astype(np.float32))
        except UserError as exc:
            problems.append(str(exc))
            continue
        encoder = recorded.get("encoder") if isinstance(recorded, dict) else None
        if encoder != records[0].audio_encoder:
            problems.append(f"{features_path} was made by {encoder}, the features by {records[0].audio_encoder}")
            continue
        if rows.ndim != 2 or rows.shape[0] != num_frames:
            problems.append(f"{features_path} has shape {list(rows.shape)}, expected {num_frames} rows")
            continue
        silence[(num_frames, fps)] = rows
    if problems:
        raise UserError(f"conditioning.audio_dropout needs the features of silence the audio stage writes "
                        f"(re-run preprocessing/save_text_latents.py): {_examples(problems)}")
    return silence


def _stored_latents(stored: Any, path: Path) -> torch.Tensor:
    """The latents tensor of a loaded ``<key>.pt`` (``{"latents": tensor}``, or a bare tensor from older runs)."""
    latents = stored.get("latents") if isinstance(stored, dict) else stored
    if not isinstance(latents, torch.Tensor):
        keys = sorted(map(str, stored))[:5] if isinstance(stored, dict) else type(stored).__name__
        raise UserError(f"latents file {path} holds no 'latents' tensor (found {keys})")
    return latents


def check_latents_file(path: Path, latent_shape: tuple[int, ...]) -> None:
    """UserError unless ``path`` loads (memory-mapped: no data is read) as latents of ``latent_shape``."""
    latents = _stored_latents(load_tensor_file(path, "latents file", mmap=True), path)
    if tuple(latents.shape) != tuple(latent_shape):
        raise UserError(f"{path}: latents {list(latents.shape)}, its JSON says {list(latent_shape)}")
def split_records(records: list[ChunkRecord], held_out_fraction: float, split_path: Path,
                  write: bool) -> tuple[list[ChunkRecord], list[ChunkRecord]]:
    """(training, held-out) chunks, split by clip.  A run keeps the split recorded in ``split_path`` while
    ``held_out_fraction`` is unchanged (even if the data grew); ``write`` (rank 0) records the split there."""
    recorded = read_json(split_path)
    if recorded is not None and recorded.get("held_out_fraction") == held_out_fraction:
        held_out_clips = set(recorded["held_out_clips"])
    else:
        held_out_clips = set(split_clips([record.clip_id for record in records], held_out_fraction)[1])
    train = [record for record in records if record.clip_id not in held_out_clips]
    held_out = [record for record in records if record.clip_id in held_out_clips]
    if not train:
        raise UserError(f"no training chunks left after holding out {len(held_out_clips)} clip(s)")
    if write:
        atomic_write_json(split_path, {
            "rule": "clip held out when held_out_score(clip_id) < held_out_fraction "
                    "(avatar_gen.training.dataset.held_out_score: SHA-1 of the clip id in [0, 1))",
            "held_out_fraction": held_out_fraction,
            "held_out_clips": sorted(held_out_clips),
            "train_clips": sorted({record.clip_id for record in train}),
            "held_out_chunks": [record.key for record in held_out],
            "train_chunks": [record.key for record in train],
        })
    return train, held_out


def normalize(latents: torch.Tensor, vae: dict) -> torch.Tensor:
    """Raw latents [C, F', h, w] -> fp32 normalised with the VAE's recorded statistics (:func:`normalize_latents`)."""
    return normalize_latents(latents.float(), vae["latents_mean"], vae["latents_std"],
                             float(vae.get("scaling_factor", 1.0)))


class LatentAudioDataset(Dataset):
    """Items ``{"latents": [C, F', h, w] normalised fp32, "audio": [F, D] fp32, "fps": float, "index": int}``
    (audio [F, 0] for records without audio)."""

    def __init__(self, records: list[ChunkRecord]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        # scan_chunks checked these files; a file changed since then still stops with its name, not a traceback.
        latents = _stored_latents(load_tensor_file(record.latents_path, "latents file"), record.latents_path)
        if tuple(latents.shape) != record.latent_shape:
            raise UserError(f"{record.latents_path}: latents {list(latents.shape)}, "
                            f"its JSON says {list(record.latent_shape)}")
        if record.audio_path is None:  # an audio-free run: an empty [F, 0] keeps the batch's shape
            audio = torch.zeros(record.num_frames, 0)
        else:
            audio = torch.from_numpy(load_array_file(record.audio_path, "audio features").astype(np.float32))
        return {"latents": normalize(latents, record.vae), "audio": audio, "fps": record.fps, "index": index}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: ``latents`` [B, C, F', h, w], ``audio`` [B, F, D], ``fps`` [B] (items may differ), ``index``."""
    return {"latents": torch.stack([item["latents"] for item in items]),
            "audio": torch.stack([item["audio"] for item in items]),
            "fps": torch.tensor([item["fps"] for item in items], dtype=torch.float64),
            "index": torch.tensor([item["index"] for item in items])}


class ResumableShardSampler(Sampler[int]):
    """Shuffled indices, disjoint per rank, reproducible per (seed, epoch), resumable mid-epoch.

    Each epoch permutes all items with ``seed + epoch``, truncates to a multiple of ``world_size`` (ranks take the
    same number of steps) and gives rank ``r`` positions ``r, r + world_size, ...``.  ``set_position(n)`` skips
    the first ``n`` of this rank's items of the epoch (the data position a checkpoint records).
    """

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if num_items < world_size:
            raise UserError(f"{num_items} training chunk(s) cannot feed {world_size} ranks")
        self.num_items, self.rank, self.world_size = num_items, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.position = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_position(self, position: int) -> None:
        self.position = position

    def __len__(self) -> int:
        return self.num_items // self.world_size

    def epoch_indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        usable = len(self) * self.world_size
        return order[:usable][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.position:])


def check_uniform_shapes(records: list[ChunkRecord], batch_size: int) -> None:
    """Batches stack chunks: with batch_size > 1 every chunk must have the same latent shape."""
    shapes = {record.latent_shape for record in records}
    if batch_size > 1 and len(shapes) > 1:
        raise UserError(f"data.batch_size {batch_size} needs chunks of one size, "
                        f"found latent shapes {sorted(shapes)[:4]}")
