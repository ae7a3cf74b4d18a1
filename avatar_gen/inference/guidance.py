"""Where audio guidance applies: the noise levels (an interval of σ) and the tokens (a region of the frame).

Classifier-free audio guidance, ``uncond + scale * (cond - uncond)`` with the features of silence as the negative,
amplifies whatever the speech changes in the prediction.  The speech is meant to move the mouth; amplified elsewhere
(the eyes, the hair, the background) the same difference costs the figure's face.  Two ways to keep it where it
belongs, both measured on the toy world (docs/results.md#the-toy-world, docs/inference.md "Audio guidance"):

- **region** ``mouth`` (the default): guidance only on the tokens over the portrait's mouth — the part of a frontal
  face detector's box by the rule that gives real footage its mouth boxes for the mouth-weighted training loss
  (:data:`avatar_gen.latents.regions.MOUTH_IN_FACE_BOX`); every other token takes the conditional prediction of the
  same pass.  No face in the portrait: the whole frame, said in the log and in the result.  ``frame``: every token.
- **interval** (low, high) of noise levels σ: guidance at the steps inside it, one unguided pass at the others
  (guidance in a limited interval, Kynkäänniemi et al. 2024); (0, 1), every step, is the default.

Torch-free (numpy; OpenCV only when a face is looked for), so the sampler can import it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FULL_INTERVAL = (0.0, 1.0)  # guidance at every noise level
GUIDANCE_REGIONS = ("mouth", "frame")


def check_guidance_interval(interval: Sequence[float]) -> tuple[float, float]:
    """(low, high) noise levels with 0 <= low < high <= 1, as floats; ValueError otherwise."""
    try:
        low, high = (float(value) for value in interval)
    except (TypeError, ValueError):
        raise ValueError(f"a guidance interval is two noise levels (low, high), got {interval!r}") from None
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"a guidance interval needs 0 <= low < high <= 1 (noise levels), got ({low:g}, {high:g})")
    return low, high


def check_guidance_region(region: str) -> str:
    if region not in GUIDANCE_REGIONS:
        raise ValueError(f"guidance region must be one of {', '.join(GUIDANCE_REGIONS)}, got {region!r}")
    return region


@dataclass(frozen=True)
class GuidanceRegion:
    """The tokens a request's guidance applies to: ``cells`` bool [token rows, token columns] (None: all of them),
    with what they are (``region``: ``mouth`` or ``frame``), the mouth ``box`` (left, top, right, bottom in fractions
    of the frame) and, for a requested mouth that became the frame, the ``reason``."""

    region: str
    cells: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    reason: str | None = None

    def summary(self) -> dict[str, Any]:
        record: dict[str, Any] = {"region": self.region}
        if self.box is not None and self.cells is not None:
            record["box"] = [round(value, 4) for value in self.box]
            record["tokens_per_frame"] = int(self.cells.sum())
        if self.reason:
            record["reason"] = self.reason
        return record


WHOLE_FRAME = GuidanceRegion(region="frame")


def guidance_region(region: str, first_frame: np.ndarray, token_rows: int, token_cols: int) -> GuidanceRegion:
    """The guided tokens of a request whose video starts from ``first_frame`` (uint8 [H, W, 3], the portrait as the
    video shows it) on a ``token_rows`` x ``token_cols`` token grid: for ``mouth`` the cells that meet the mouth's
    part of the largest face's box (:func:`avatar_gen.latents.regions.mouth_box_from_faces`, the training boxes'
    rule), or the whole frame with a warning when no face is found."""
    if check_guidance_region(region) == "frame":
        return WHOLE_FRAME
    from avatar_gen.latents.regions import mouth_box_from_faces
    from avatar_gen.media.faces import detect_faces

    height, width = first_frame.shape[:2]
    mouth = mouth_box_from_faces([detect_faces(first_frame)], width, height)
    if mouth.box is None:
        log.warning("no face found in the portrait: audio guidance applies to the whole frame")
        return GuidanceRegion(region="frame", reason=f"no mouth found ({mouth.reason})")
    cells = mouth.cells(token_rows, token_cols)
    log.info("audio guidance on the mouth: %d of %d tokens per frame", int(cells.sum()), token_rows * token_cols)
    return GuidanceRegion(region="mouth", cells=cells, box=mouth.box)
