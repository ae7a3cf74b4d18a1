"""Which clips to encode: a folder or file of videos, or the scraper's transcripts; sharding.

A clip is one video file.  Its id is the transcript record's ``clip_id`` or, for plain files, the file
stem.  Paths recorded in outputs are relative to the data root (the folder holding the output folder,
e.g. ``data/`` for ``data/vae_latents``), or absolute for videos outside it (given with ``--inputs``; the later
stages, which read paths only from records, refuse those: see :func:`avatar_gen.utils.datafiles.data_path`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from avatar_gen.errors import UserError
from avatar_gen.utils.datafiles import data_path, is_inside, read_transcripts

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass(frozen=True)
class ClipSource:
    """One video to encode.

    ``face_center`` is (x, y) in [0, 1] of the video frame when the scraper recorded a face point; the
    crop is then centred there instead of in the middle of the frame.
    """

    clip_id: str
    path: Path  # absolute
    face_center: tuple[float, float] | None = None


def absolute(path: str | os.PathLike) -> Path:
    """An absolute, normalised path that keeps symbolic links (a linked video folder stays under the data root)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def stable_shard(key: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) a key belongs to: a hash of the key, the same in every process and
    on every machine (Python's ``hash`` is salted per process), so shards are disjoint and complete."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def select_shard(clips: list[ClipSource], shard_index: int, shard_count: int) -> list[ClipSource]:
    return [clip for clip in clips if stable_shard(clip.clip_id, shard_count) == shard_index]


def _find_videos(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*")
                  if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file() and not path.name.startswith("."))


def discover_videos(inputs: Path) -> list[ClipSource]:
    """Every video file under ``inputs`` (recursively; or ``inputs`` itself when it is a file), id = stem.

    Two files with the same stem would write the same outputs, so the later ones are left out with a warning.
    """
    if not inputs.exists():
        raise UserError(f"--inputs not found: {inputs}")
    paths = [inputs] if inputs.is_file() else _find_videos(inputs)
    clips: dict[str, ClipSource] = {}
    for path in paths:
        clip_id = path.stem
        if clip_id in clips:
            log.warning("two videos with the clip id %s: using %s, leaving out %s", clip_id, clips[clip_id].path, path)
            continue
        clips[clip_id] = ClipSource(clip_id=clip_id, path=absolute(path))
    if inputs.is_dir() and not clips:
        log.warning("no video files (%s) under %s", ", ".join(VIDEO_EXTENSIONS), inputs)
    return list(clips.values())


def _face_center(record: dict) -> tuple[float, float] | None:
    """The face point of a transcript record: ``face: {x, y}`` (clip coordinates) or the AVSpeech row's
    ``source.face_x/face_y``; None when absent or out of [0, 1]."""
    face = record.get("face")
    source = record.get("source")
    if isinstance(face, dict) and "x" in face and "y" in face:
        x, y = face["x"], face["y"]
    elif isinstance(source, dict) and "face_x" in source and "face_y" in source:
        x, y = source["face_x"], source["face_y"]
    else:
        return None
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        return None
    return (x, y) if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 else None


def load_transcript_clips(transcripts: Path) -> list[ClipSource]:
    """The clips the scraper kept: one per record of ``video_transcripts.json`` (DESIGN.md schema).

    ``video_path`` is taken relative to the transcripts file's folder (the data root) and must stay inside it.
    A record without ``clip_id``/``video_path``, with mistyped fields, or with a path leading out of the data root
    is a broken file, not a bad clip: UserError.
    """
    if not transcripts.is_file():
        raise UserError(f"--transcripts not found: {transcripts}")
    records = read_transcripts(transcripts, "--transcripts")
    data_root = absolute(transcripts).parent
    clips: dict[str, ClipSource] = {}
    for number, record in enumerate(records):
        clip_id = record["clip_id"]
        if clip_id in clips:
            continue  # the scraper never writes duplicates; tolerate a hand-merged file
        path = data_path(record["video_path"], data_root, f"--transcripts {transcripts}: record {number} video_path")
        clips[clip_id] = ClipSource(clip_id=clip_id, path=path, face_center=_face_center(record))
    return list(clips.values())


def unsafe_clip_id(clip_id: str) -> str | None:
    """Why ``clip_id`` cannot name output files (a path separator, a hidden name, ...), or None when it can."""
    if not clip_id or clip_id in (".", ".."):
        return "empty or a dot"
    if any(character in clip_id for character in ("/", "\\", "\0")):
        return "contains a path separator or NUL"
    if clip_id.startswith("."):
        return "starts with a dot (hidden and temporary files do)"
    return None


def collect_clips(inputs: Path | None, transcripts: Path | None) -> list[ClipSource]:
    """The clips to encode, sorted by id.

    With ``transcripts`` only the clips the scraper kept; ``inputs`` then narrows them to videos under
    that folder (or that one file).  Without it, every video under ``inputs``.
    """
    if inputs is None and transcripts is None:
        raise UserError("give --inputs (a video folder or file) and/or --transcripts (the scraper's records)")
    if transcripts is None:
        clips = discover_videos(inputs)
    else:
        clips = load_transcript_clips(transcripts)
        if inputs is not None:
            if not inputs.exists():
                raise UserError(f"--inputs not found: {inputs}")
            root = absolute(inputs)
            kept = [clip for clip in clips if clip.path == root or is_inside(clip.path, root)]
            if len(kept) < len(clips):
                log.info("%d of %d transcript clips lie outside %s and are left out", len(clips) - len(kept),
                         len(clips), inputs)
            clips = kept
    safe = []
    for clip in clips:
        problem = unsafe_clip_id(clip.clip_id)
        if problem:  # it would write outside the output folder or be swept as a temporary: never touch it
            log.warning("left out clip id %r (%s): %s", clip.clip_id, clip.path, problem)
        else:
            safe.append(clip)
    return sorted(safe, key=lambda clip: clip.clip_id)


def recorded_path(path: Path, data_root: Path) -> str:
    """``path`` as written in records: relative to ``data_root`` (POSIX separators) or absolute outside it."""
    root = absolute(data_root)
    return path.relative_to(root).as_posix() if is_inside(path, root) else str(path)
