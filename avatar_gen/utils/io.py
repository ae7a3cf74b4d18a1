"""Atomic writes: a reader never sees a half-written file or folder, a killed writer leaves the old one intact.

A file is written through :func:`atomic_path`: a hidden temporary file in the same folder (so ``os.replace`` is a
same-filesystem rename), flushed to disk, then renamed over the target.  A folder (a model, a checkpoint) is built
in a hidden sibling and swapped in by :func:`replace_folder` (:func:`atomic_folder` does both).  Temporary names
start with ``.tmp-`` so stages can sweep up leftovers of a killed run, and carry the writer's process id
(``.tmp-<stem>-<pid>-<random><suffix>``), so a leftover is told apart from another process's file that is still
being written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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
        prefix=f"{TMP_PREFIX}{target.stem}-{os.getpid()}-", suffix=target.suffix if suffix is None else suffix,
        dir=target.parent,
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
    """Rename the complete folder ``staging`` to ``target``.  An existing ``target`` is swapped with ``staging`` in
    one atomic step (:func:`exchange_paths`), so that ``target`` (and a link to it, such as a checkpoint's ``latest``)
    never names a missing folder, then removed; where the system cannot swap, it is moved aside first."""
    target = Path(target)
    if target.exists() and exchange_paths(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # the old copy, now under the staging name
        return target
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


def acquire_exclusive_lock(lock_file: str | os.PathLike, what: str) -> IO:
    """Take an advisory lock on ``lock_file`` (created if missing) and return its open handle: the lock holds until
    the handle is closed or the process ends, however it ends (the OS releases it even after SIGKILL).  Raises
    UserError, with ``what`` in its one line, when another process holds it."""
    from avatar_gen.errors import UserError

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")  # noqa: SIM115 - the open handle is the lock, returned to the caller
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{what} (lock {lock_file})") from None
    return handle


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, what: str) -> Iterator[None]:
    """:func:`acquire_exclusive_lock` for the duration of a ``with`` block."""
    handle = acquire_exclusive_lock(lock_file, what)
    try:
        yield
    finally:
        handle.close()


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange_paths(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Swap two existing paths (files or folders) in one atomic step, so that no reader ever finds either name
    missing.  Linux ``renameat2(RENAME_EXCHANGE)``; returns False, with nothing changed, where the system or the
    filesystem cannot do it."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), os.fspath(first), None, os.fspath(second))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_orphaned_temporaries(target: str | os.PathLike) -> int:
    """Delete the temporaries of ``target`` (``.tmp-<stem>-<pid>-*``) whose writing process is gone, e.g. a killed
    inference's half-written video; a file another live process is still writing is left alone.  Returns how many
    were removed."""
    target = Path(target)
    pattern = re.compile(rf"^{re.escape(TMP_PREFIX + target.stem)}-(\d+)-")
    removed = 0
    pattern_text = os.path.join(glob.escape(str(target.parent)), glob.escape(f"{TMP_PREFIX}{target.stem}-") + "*")
    for candidate in glob.glob(pattern_text):
        match = pattern.match(os.path.basename(candidate))
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(candidate)
                removed += 1
    return removed
