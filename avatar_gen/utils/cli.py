"""Entry-point plumbing shared by every stage script.

A stage script is ``main(argv=None)``: it builds an ``argparse`` parser, then hands a function to
:func:`run_main`, which configures logging, runs it, and turns user mistakes into one clear line
on stderr and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator

from avatar_gen.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger(__name__)


def distributed_rank() -> int:
    """Global rank from the launcher's environment (torchrun / deepspeed), 0 when not distributed."""
    return int(os.environ.get("RANK", "0"))


def setup_logging(verbose: bool = False, quiet_libraries: bool = True) -> None:
    """Configure the root logger once, in an entry point; ranks > 0 only log warnings."""
    rank = distributed_rank()
    level = logging.DEBUG if verbose else logging.INFO
    if rank != 0:
        level = logging.WARNING
    prefix = f"[rank {rank}] " if "WORLD_SIZE" in os.environ and os.environ.get("WORLD_SIZE") != "1" else ""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    if quiet_libraries:
        for noisy in ("urllib3", "httpx", "filelock", "PIL", "matplotlib", "numba", "h5py", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def run_main(body: Callable[[], int | None], verbose: bool = False) -> int:
    """Run ``body`` with logging configured; map errors to exit codes.

    ``UserError`` (and missing files) -> one line ``error: ...`` on stderr, exit 2.
    ``KeyboardInterrupt`` -> exit 130.  Anything else is a bug and keeps its traceback.
    """
    setup_logging(verbose)
    try:
        code = body()
    except UserError as exc:
        sys.stderr.write(f"error: {one_line(str(exc))}\n")
        return EXIT_USER_ERROR
    except FileNotFoundError as exc:
        sys.stderr.write(f"error: file not found: {exc.filename or exc}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    return int(code or 0)


def one_line(message: str) -> str:
    """``message`` on one line: a message quoting a tool's several output lines keeps them, joined by "; "."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Inside the block, SIGTERM (a service manager, ``kill``, a test) stops the process as Ctrl-C does: with a
    KeyboardInterrupt, so that ``finally`` blocks run, child processes (ffmpeg) are stopped and temporary files
    removed.  The previous handler comes back after the block; outside the main thread this does nothing."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # signal handlers can only be set from the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def require_file(path: str | os.PathLike, what: str = "file") -> str:
    """Raise a UserError naming ``what`` when ``path`` is not an existing regular file."""
    if not os.path.exists(path):
        raise UserError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise UserError(f"{what} is not a file: {path}")
    return os.fspath(path)


def require_dir(path: str | os.PathLike, what: str = "folder") -> str:
    if not os.path.isdir(path):
        raise UserError(f"{what} not found or not a folder: {path}")
    return os.fspath(path)


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse ``--shard I/N`` (0-based I); without it use the launcher's RANK/WORLD_SIZE, else (0, 1)."""
    if text is None:
        return distributed_rank(), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UserError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {text}: need 0 <= I < N")
    return index, count
