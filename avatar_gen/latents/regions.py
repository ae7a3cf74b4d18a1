"""Mouth boxes: where the mouth is in the frames a clip's latents encode (an optional training annotation).

A mouth-weighted flow loss (``flow.mouth_loss_weight`` in the training config, docs/training.md) weighs the tokens
that cover the mouth more, because lip motion is a small part of a talking-head video's latents and the part the
speech drives.  It needs to know where the mouth is: one JSON per clip in a folder (``data.mouth_boxes``)::

    <clip_id>.json   {"format_version": 1, "width": W, "height": H, "box": [left, top, right, bottom]}

``box`` is in fractions (0..1) of a ``width`` x ``height`` frame, the size of the frames the latents stage encoded:
a chunk of another size is refused rather than weighed in the wrong place (a crop would move the mouth).  One box per
clip: it must cover the mouth wherever the head moves it.  The synthetic clips write theirs from the ground truth
(:func:`avatar_gen.synthetic.dataset.generate_dataset`); real footage has no writer yet (a face track could).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_gen.errors import UserError
from avatar_gen.utils.io import atomic_write_json, read_json

MOUTH_BOX_FORMAT = 1


@dataclass(frozen=True)
class MouthBox:
    """The mouth of one clip: ``box`` (left, top, right, bottom) in fractions of a ``width`` x ``height`` frame."""

    box: tuple[float, float, float, float]
    width: int
    height: int

    def cells(self, rows: int, cols: int) -> np.ndarray:
        """bool [rows, cols]: the cells of a ``rows`` x ``cols`` grid over the frame (latent pixels, tokens) whose
        area meets the box."""
        left, top, right, bottom = self.box
        row_start, col_start = np.arange(rows) / rows, np.arange(cols) / cols
        row_hit = (row_start < bottom) & (row_start + 1 / rows > top)
        col_hit = (col_start < right) & (col_start + 1 / cols > left)
        return row_hit[:, None] & col_hit[None, :]


def write_mouth_box(folder: Path, clip_id: str, box: MouthBox) -> Path:
    """Write ``<folder>/<clip_id>.json`` atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{clip_id}.json"
    atomic_write_json(path, {"format_version": MOUTH_BOX_FORMAT, "width": box.width, "height": box.height,
                             "box": [round(float(value), 6) for value in box.box]})
    return path


def read_mouth_box(path: Path) -> MouthBox:
    """One mouth-box file; a malformed one is a UserError naming it."""
    try:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format_version") != MOUTH_BOX_FORMAT:
            raise ValueError(f"not a mouth-box file of format {MOUTH_BOX_FORMAT}")
        width, height = int(data["width"]), int(data["height"])
        left, top, right, bottom = (float(value) for value in data["box"])
        if width < 1 or height < 1:
            raise ValueError(f"frame size {width}x{height}")
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"box {data['box']} is not left < right, top < bottom within 0..1")
    except (OSError, KeyError, TypeError, ValueError) as exc:  # (ValueError covers bad JSON and bad UTF-8)
        raise UserError(f"{path}: bad mouth box ({exc})") from None
    return MouthBox(box=(left, top, right, bottom), width=width, height=height)


def load_mouth_boxes(folder: Path, clip_ids: set[str]) -> dict[str, MouthBox]:
    """The boxes of ``clip_ids`` found in ``folder`` (clips without a file are left out; the caller decides)."""
    if not Path(folder).is_dir():
        raise UserError(f"mouth-box folder not found: {folder}")
    return {path.stem: read_mouth_box(path) for path in sorted(Path(folder).glob("*.json")) if path.stem in clip_ids}
