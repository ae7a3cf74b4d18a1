"""Progress bars: tqdm on rank 0 only, so N ranks do not draw N bars."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

from avatar_gen.utils.cli import distributed_rank

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
             disable: bool | None = None, leave: bool = True) -> tqdm:
    if disable is None:
        disable = distributed_rank() != 0
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=leave, dynamic_ncols=True)
