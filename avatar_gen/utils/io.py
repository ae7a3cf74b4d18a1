"""Atomic writes: a reader never sees a half-written file or folder, a killed writer leaves the old one intact.

A file is written through :func:`atomic_path`: a hidden temporary file in the same folder (so ``os.replace`` is a
same-filesystem rename), flushed to disk, then renamed over the target.  A folder (a model, a checkpoint) is built
in a hidden sibling and swapped in by :func:`replace_folder` (:func:`atomic_folder` does both).  Temporary names
start with ``.tmp-`` so stages can sweep up leftovers of a killed run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


@functools.lru_cache(maxsize=1)
def _current_umask() -> int:
    """The process umask, read once (reading it means setting it, which is not thread-safe to repeat)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    ``suffix`` defaults to the target's suffix, so tools that pick a format from the file
    name (ffmpeg, torch.save, numpy) write the right one.  On any exception the temporary file
    is removed and the target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{target.stem}-", suffix=target.suffix if suffix is None else suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would (0666 less the umask).
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def staging_path(target: str | os.PathLike) -> Path:
    """The hidden sibling ``.tmp-<name>`` in which folder ``target`` is built."""
    target = Path(target)
    return target.parent / f"{TMP_PREFIX}{target.name}"


def make_staging_folder(target: str | os.PathLike) -> Path:
    """An empty :func:`staging_path` for ``target`` (a stale one from a killed run is cleared)."""
    staging = staging_path(target)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def replace_folder(staging: Path, target: str | os.PathLike) -> Path:
    """Rename the complete folder ``staging`` to ``target``; an existing ``target`` is moved aside and removed."""
    target = Path(target)
    if target.exists():
        retired = target.parent / f"{TMP_PREFIX}old-{target.name}"
        if retired.exists():
            shutil.rmtree(retired)
        target.rename(retired)
        shutil.rmtree(retired)
    staging.rename(target)
    return target


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds it replaces ``target``, otherwise it is removed."""
    staging = make_staging_folder(target)
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(target, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file; a missing file gives ``default`` (a corrupt one raises)."""
    path = Path(path)
    if not path.exists():
        return default
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``.tmp-*`` files left in ``folder`` by a killed writer; return how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for stale in folder.glob(f"{TMP_PREFIX}*"):
        if stale.is_file():
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed += 1
    return removed
