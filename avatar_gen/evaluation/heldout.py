"""Which clips are held out from training: read the list that training recorded, match generated files to it."""

from __future__ import annotations

import os
from pathlib import Path

from avatar_gen.errors import UserError
from avatar_gen.layout import SPLIT_FILE
from avatar_gen.utils.datafiles import load_json

# Training writes {"held_out_clips": [...], "train_clips": [...], "held_out_chunks": [...], ...} there.
# Keys under which a JSON file may hold the list of held-out clip ids (training's key first).
HELDOUT_JSON_KEYS = ("held_out_clips", "heldout", "heldout_clips", "held_out", "clip_ids")


def read_heldout_ids(path: str | os.PathLike) -> list[str]:
    """Clip ids from ``path``: a training run folder (its ``data_split.json``), that JSON file itself, another
    JSON (a list of ids, a dict with one of :data:`HELDOUT_JSON_KEYS`, or a list of records with a ``clip_id``),
    or a text file (one id per line, ``#`` comments)."""
    path = Path(path)
    if path.is_dir():
        if not (path / SPLIT_FILE).is_file():
            raise UserError(f"held-out list: {path} is a folder without the training split {SPLIT_FILE}")
        path = path / SPLIT_FILE
    if not path.is_file():
        raise UserError(f"held-out list not found: {path}")
    if path.suffix.lower() == ".json":
        data = load_json(path, "held-out list")
        if isinstance(data, dict):
            for key in HELDOUT_JSON_KEYS:
                if key in data:
                    data = data[key]
                    break
            else:
                raise UserError(f"held-out list {path}: expected one of the keys {', '.join(HELDOUT_JSON_KEYS)}")
        if not isinstance(data, list):
            raise UserError(f"held-out list {path}: expected a list of clip ids")
        ids = [str(item["clip_id"]) if isinstance(item, dict) and "clip_id" in item else item for item in data]
        if not all(isinstance(clip_id, str) for clip_id in ids):
            raise UserError(f"held-out list {path}: every entry must be a clip id string or a record with clip_id")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"held-out list {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = [clip_id for clip_id in ids if clip_id]
    return list(dict.fromkeys(ids))  # unique, order kept


def matches_heldout(stem: str, heldout_ids: set[str]) -> str | None:
    """The held-out clip id that a generated file's stem belongs to: the stem itself, or the clip of a chunk
    key ``<clip>_<k>`` (DESIGN.md's chunk naming); None when it is not held out."""
    if stem in heldout_ids:
        return stem
    clip, _, chunk = stem.rpartition("_")
    if chunk.isdigit() and clip in heldout_ids:
        return clip
    return None
