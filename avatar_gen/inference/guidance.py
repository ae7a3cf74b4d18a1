"""Where audio guidance applies — the noise levels (an interval of σ) and the tokens (a region of the frame) — and
which tokens a start from the portrait leaves to pure noise.

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

A start below pure noise (``start_sigma`` < 1: the portrait's still video noised to it, docs/inference.md "Starting
from the portrait") applies to a **start region**: ``outside_mouth`` leaves the same mouth tokens to start from pure
noise (the whole frame when no face is found), so that the portrait's closed mouth is not what they start from;
``frame`` starts every token from the portrait.

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
START_REGIONS = ("outside_mouth", "frame")


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


def check_start_region(region: str) -> str:
    if region not in START_REGIONS:
        raise ValueError(f"start region must be one of {', '.join(START_REGIONS)}, got {region!r}")
    return region


@dataclass(frozen=True)
class GuidanceRegion:
    """Tokens of a request's frame — those its guidance applies to, or those that start from pure noise while the
    rest start from the portrait: ``cells`` bool [token rows, token columns] (None: all of them), with what they are
    (``region``: ``mouth`` or ``frame``), the mouth ``box`` (left, top, right, bottom in fractions of the frame) and,
    for a requested mouth that became the frame, the ``reason``."""

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


def mouth_region(first_frame: np.ndarray, token_rows: int, token_cols: int) -> GuidanceRegion:
    """The cells of a ``token_rows`` x ``token_cols`` token grid over ``first_frame`` (uint8 [H, W, 3], the portrait
    as the video shows it) that meet the mouth's part of the largest face's box
    (:func:`avatar_gen.latents.regions.mouth_box_from_faces`, the training boxes' rule); region ``frame`` with the
    reason when no face is found."""
    from avatar_gen.latents.regions import mouth_box_from_faces
    from avatar_gen.media.faces import detect_faces

    height, width = first_frame.shape[:2]
    mouth = mouth_box_from_faces([detect_faces(first_frame)], width, height)
    if mouth.box is None:
        return GuidanceRegion(region="frame", reason=f"no mouth found ({mouth.reason})")
    return GuidanceRegion(region="mouth", cells=mouth.cells(token_rows, token_cols), box=mouth.box)


def guidance_region(region: str, first_frame: np.ndarray, token_rows: int, token_cols: int,
                    mouth: GuidanceRegion | None = None) -> GuidanceRegion:
    """The guided tokens of a request whose video starts from ``first_frame`` on a ``token_rows`` x ``token_cols``
    token grid: for ``mouth`` the mouth's cells (``mouth``, or :func:`mouth_region` when not given), or the whole
    frame with a warning when no face is found."""
    if check_guidance_region(region) == "frame":
        return WHOLE_FRAME
    mouth = mouth_region(first_frame, token_rows, token_cols) if mouth is None else mouth
    if mouth.cells is None:
        log.warning("no face found in the portrait: audio guidance applies to the whole frame")
        return mouth
    log.info("audio guidance on the mouth: %d of %d tokens per frame", int(mouth.cells.sum()), token_rows * token_cols)
    return mouth


def noise_start_region(region: str, first_frame: np.ndarray, token_rows: int, token_cols: int,
                       mouth: GuidanceRegion | None = None) -> GuidanceRegion | None:
    """The tokens that start from pure noise when the rest start from the portrait (:data:`START_REGIONS`): None for
    ``frame`` (every token from the portrait); for ``outside_mouth`` the mouth's cells (``mouth``, or
    :func:`mouth_region`), or every cell with a warning when no face is found — a start that cannot find the mouth
    keeps it moving rather than starting it from the portrait's."""
    if check_start_region(region) == "frame":
        return None
    mouth = mouth_region(first_frame, token_rows, token_cols) if mouth is None else mouth
    if mouth.cells is None:
        log.warning("no face found in the portrait: every token starts from pure noise")
        return GuidanceRegion(region="frame", cells=np.ones((token_rows, token_cols), dtype=bool), reason=mouth.reason)
    log.info("from pure noise on the mouth: %d of %d tokens per frame, the rest from the portrait",
             int(mouth.cells.sum()), token_rows * token_cols)
    return mouth
