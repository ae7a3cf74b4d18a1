"""Readers of the files that stages hand each other (and that a user may have edited, cut short or received from
someone else): each turns a malformed file into one :class:`~avatar_gen.errors.UserError` line that names the file,
never a traceback, and none of them runs code from a file.

- :func:`load_json`: any JSON file (not UTF-8, invalid, nested too deeply for the parser);
- :func:`read_transcripts`: ``video_transcripts.json`` with each record's fields type-checked (DESIGN.md's schema);
- :func:`data_path`: the one rule for a path written in a record: relative to the data root, and inside it;
- :func:`load_tensor_file` / :func:`load_array_file` / :func:`load_safetensors_file`: ``.pt`` (tensors only),
  ``.npy`` (numbers only) and ``.safetensors`` files, cut-short and empty ones included.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatar_gen.errors import UserError


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The JSON value in ``path``; UserError naming ``what`` and the file when it is missing, not UTF-8 text, not
    valid JSON, or nested deeper than the parser's recursion allows (a crafted 100 000-deep list)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be read as JSON") from None


# ----------------------------------------------------------------------------------------------- transcripts

class _Lenient(BaseModel):
    """Unknown fields are kept (later versions and other tools add their own); numbers must be finite."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class TranscriptWord(_Lenient):
    word: str = ""
    start: float | None = None
    end: float | None = None
    probability: float | None = None


class TranscriptSegment(_Lenient):
    start: float | None = None
    end: float | None = None
    text: str = ""
    words: list[TranscriptWord] = Field(default_factory=list)


class TranscriptRecord(_Lenient):
    """One clip of ``video_transcripts.json`` (DESIGN.md): the fields later stages read, with their types."""

    clip_id: str = Field(min_length=1)
    video_path: str = Field(min_length=1)
    transcript: list[TranscriptSegment] = Field(default_factory=list)
    duration: float | None = None
    fps: float | None = None


def read_transcripts(path: str | os.PathLike, what: str = "transcripts") -> list[dict[str, Any]]:
    """The records of a ``video_transcripts.json``, as written (unknown fields kept), after checking that the file is
    a JSON list of records whose ``clip_id``, ``video_path`` and transcript segments/words have the documented types.

    A malformed file stops the stage with one line naming the file, the record and the field: a record that cannot
    be trusted in one field cannot be trusted in the others, and the scraper rewrites this file.
    """
    records = load_json(path, what)
    if not isinstance(records, list):
        raise UserError(f"{what} {path} must hold a JSON list of records, not a {type(records).__name__}")
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(f"{what} {path}: record {number} is a {type(record).__name__}, not a JSON object")
        try:
            TranscriptRecord.model_validate(record)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise UserError(f"{what} {path}: record {number} ({str(record.get('clip_id'))[:60]}): {where}: "
                            f"{problem['msg']} (got {str(problem.get('input'))[:60]!r})") from None
    return records


# ----------------------------------------------------------------------------------------------- paths

def data_path(recorded: Any, data_root: str | os.PathLike, what: str = "path") -> Path:
    """The absolute path of a file that a record names, by the one rule every stage follows: a record's path is
    relative to the data root and stays inside it (an absolute path must lie inside it too).  The check is on the
    path as written, so a folder of videos linked into the data root is inside it.

    Raises UserError (naming ``what``) for an empty or non-string path and for one that leads outside the data root
    (``../../etc/passwd``, ``/home/me/secret.mp4``): a data file must not make a stage read other files.
    """
    if not isinstance(recorded, str) or not recorded.strip():
        raise UserError(f"{what} must be a non-empty path, got {recorded!r}")
    root = Path(os.path.abspath(data_root))
    resolved = Path(os.path.normpath(root / recorded))  # an absolute `recorded` replaces the root here
    try:
        resolved.relative_to(root)
    except ValueError:
        raise UserError(f"{what} {recorded!r} leads outside the data root {root}: records may only name files "
                        f"inside it (link a folder of videos into it to use videos kept elsewhere)") from None
    return resolved


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` lies in ``folder`` (or is it), judged on the normalised paths as written (links kept)."""
    try:
        Path(os.path.normpath(os.path.abspath(path))).relative_to(os.path.normpath(os.path.abspath(folder)))
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- tensors

# What torch's weights-only unpickler names when it refuses a file: the class or function, or the opcode.
_REFUSED_PICKLE = re.compile(r"(?:unsupported|Unsupported global:) GLOBAL [\w.]+|Unsupported operand \d+")


def load_tensor_file(path: str | os.PathLike, what: str = "tensor file", map_location: Any = "cpu",
                     mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``; UserError naming the file when it is empty, cut short, not a torch
    file, or holds Python objects other than tensors (refused unread: unpickling them could run code)."""
    import torch

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UserError(f"{what} {path} is empty")
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not (mmap and "mmap can only be used" in str(exc)):
                raise
            # A file in torch's legacy (non-zip) format cannot be memory-mapped: read it whole.
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except pickle.UnpicklingError as exc:
        # torch's text suggests weights_only=False (or allow-listing the class), which would run whatever the file
        # holds: name only what was refused.
        found = _REFUSED_PICKLE.search(str(exc))
        detail = f" ({found.group(0)})" if found else ""
        raise UserError(f"{what} {path} holds Python objects other than tensors and was not loaded{detail}") from None
    except (RuntimeError, EOFError, ValueError, AttributeError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what} {path} is cut short or not a torch file ({first[:200]})") from None


def load_array_file(path: str | os.PathLike, what: str = "array file", mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of a ``.npy`` holding numbers; UserError naming the file when it is cut short, not a ``.npy`` or
    holds Python objects (never unpickled)."""
    path = Path(path)
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (ValueError, OSError, EOFError) as exc:
        reason = ("holds Python objects, not numbers" if "pickle" in str(exc) or "Python objects" in str(exc)
                  else f"is cut short or not a .npy file ({str(exc).splitlines()[0][:200]})")
        raise UserError(f"{what} {path} {reason}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise UserError(f"{what} {path} holds {getattr(array, 'dtype', type(array).__name__)} data, not numbers")
    return array


def load_safetensors_file(path: str | os.PathLike, what: str = "weights file", device: str = "cpu") -> dict:
    """``safetensors.torch.load_file``; UserError naming the file when it is missing, cut short or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path), device=device)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what} {path} is cut short or not a safetensors file ({first[:200]})") from None
