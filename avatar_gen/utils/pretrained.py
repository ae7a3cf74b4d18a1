"""Where pretrained weights come from: a local folder or a Hugging Face hub id, never a silent substitute.

Every loader of real weights (LTX-Video VAE and transformer, wav2vec2) resolves its argument here and turns
a loading failure into one :class:`UserError` line that names what it wanted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from avatar_gen.errors import UserError, first_line


@dataclass(frozen=True)
class PretrainedSource:
    name_or_path: str  # as the user gave it
    source: str  # what to hand to ``from_pretrained``
    is_local: bool


def looks_like_local_path(name_or_path: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else (``./x``, ``/x``, ``~/x``, ``a/b/c``) is a path."""
    return (name_or_path.startswith((".", "/", "~", "\\")) or name_or_path.count("/") > 1
            or (os.sep != "/" and os.sep in name_or_path))


def resolve_pretrained(name_or_path: str | os.PathLike, what: str) -> PretrainedSource:
    """An existing folder, else a hub id; a file or a missing path that can only be local is a UserError."""
    name_or_path = os.fspath(name_or_path)
    local = Path(os.path.expanduser(name_or_path))
    if local.exists():
        if not local.is_dir():
            raise UserError(f"{what} must be a folder or a hub id, got the file {name_or_path}")
        return PretrainedSource(name_or_path, str(local), True)
    if looks_like_local_path(name_or_path):
        raise UserError(f"{what} folder not found: {name_or_path}")
    return PretrainedSource(name_or_path, name_or_path, False)


def loading_error(exc: BaseException, source: PretrainedSource, what: str, revision: str | None = None) -> UserError:
    """The one-line error for a ``from_pretrained`` that failed (missing files, no network, bad revision)."""
    where = "folder" if source.is_local else "Hugging Face hub id"
    hint = "" if source.is_local else " (offline? download it and pass the local folder)"
    revision_text = f" (revision {revision})" if revision else ""
    return UserError(f"cannot load the {what} from {where} {source.name_or_path!r}{revision_text}: "
                     f"{first_line(exc)}{hint}")
