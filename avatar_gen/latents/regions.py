"""Mouth boxes: where the mouth is in the frames a clip's latents encode (an optional training annotation).

A mouth-weighted flow loss (``flow.mouth_loss_weight`` in the training config, docs/training.md) weighs the tokens
that cover the mouth more, because lip motion is a small part of a talking-head video's latents and the part the
speech drives.  It needs to know where the mouth is: one JSON per clip in a folder (``data.mouth_boxes``)::

    <clip_id>.json   {"format_version": 1, "width": W, "height": H, "box": [left, top, right, bottom]}

``box`` is in fractions (0..1) of a ``width`` x ``height`` frame, the size of the frames the latents stage encoded:
a chunk of another size is refused rather than weighed in the wrong place (a crop would move the mouth).  One box per
clip: it must cover the mouth wherever the head moves it.  ``box`` may be null (with a ``reason``): the clip was
looked at and no mouth was found, so its tokens all weigh 1 — said, not silently assumed.

Writers: the synthetic clips from their ground truth (:func:`avatar_gen.synthetic.dataset.generate_dataset`); real
footage from a face track (:func:`write_face_track_mouth_boxes`, ``preprocessing/save_mouth_boxes.py``): the frames
the latents stage encoded (its recorded crop and size), sampled a few times a second, a frontal face detector on
each, the mouth's part of each face box (:data:`MOUTH_IN_FACE_BOX`), and the box spanning most of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar_gen.errors import MediaError, UserError
from avatar_gen.utils.datafiles import data_path
from avatar_gen.utils.io import atomic_write_json, read_json
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

MOUTH_BOX_FORMAT = 1
# The mouth's part of a frontal face detector's box (left, top, right, bottom, in fractions of the face box): OpenCV's
# frontal cascade puts the mouth's centre about 3/4 down its box (measured on the synthetic figures, whose mouths are
# known: 0.73-0.78 down, 0.46-0.50 across); the box is wide and tall enough for lips at their widest, mouth open.
MOUTH_IN_FACE_BOX = (0.25, 0.58, 0.75, 0.95)
MIN_FACE_SHARE = 0.5  # a face in fewer of the sampled frames than this: no box (the clip's face is not reliable)
SPAN_PERCENTILE = 10  # the clip's box spans the per-frame mouth boxes from this percentile to 100 minus it


@dataclass(frozen=True)
class MouthBox:
    """The mouth of one clip: ``box`` (left, top, right, bottom) in fractions of a ``width`` x ``height`` frame, or
    None with the ``reason`` no mouth was found."""

    box: tuple[float, float, float, float] | None
    width: int
    height: int
    reason: str | None = None

    def cells(self, rows: int, cols: int) -> np.ndarray:
        """bool [rows, cols]: the cells of a ``rows`` x ``cols`` grid over the frame (latent pixels, tokens) whose
        area meets the box (none without a box)."""
        if self.box is None:
            return np.zeros((rows, cols), dtype=bool)
        left, top, right, bottom = self.box
        row_start, col_start = np.arange(rows) / rows, np.arange(cols) / cols
        row_hit = (row_start < bottom) & (row_start + 1 / rows > top)
        col_hit = (col_start < right) & (col_start + 1 / cols > left)
        return row_hit[:, None] & col_hit[None, :]


def write_mouth_box(folder: Path, clip_id: str, box: MouthBox) -> Path:
    """Write ``<folder>/<clip_id>.json`` atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{clip_id}.json"
    record = {"format_version": MOUTH_BOX_FORMAT, "width": box.width, "height": box.height,
              "box": None if box.box is None else [round(float(value), 6) for value in box.box]}
    if box.reason:
        record["reason"] = box.reason
    atomic_write_json(path, record)
    return path


def read_mouth_box(path: Path) -> MouthBox:
    """One mouth-box file; a malformed one is a UserError naming it."""
    try:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format_version") != MOUTH_BOX_FORMAT:
            raise ValueError(f"not a mouth-box file of format {MOUTH_BOX_FORMAT}")
        width, height = int(data["width"]), int(data["height"])
        if width < 1 or height < 1:
            raise ValueError(f"frame size {width}x{height}")
        if data["box"] is None:
            return MouthBox(box=None, width=width, height=height, reason=str(data.get("reason") or "no reason given"))
        left, top, right, bottom = (float(value) for value in data["box"])
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


def mouth_box_from_faces(face_boxes: list[np.ndarray], width: int, height: int) -> MouthBox:
    """The clip's mouth box from the largest face found in each sampled frame (``face_boxes``: [N, 4] (x, y, w, h)
    arrays in pixels of ``width`` x ``height`` frames, largest first; an empty one where none was found)."""
    found = [boxes[0] for boxes in face_boxes if len(boxes)]
    if not face_boxes or len(found) < MIN_FACE_SHARE * len(face_boxes):
        return MouthBox(box=None, width=width, height=height,
                        reason=f"a face in {len(found)} of {len(face_boxes)} sampled frames")
    x, y, w, h = np.asarray(found, dtype=np.float64).T
    left, top, right, bottom = MOUTH_IN_FACE_BOX
    mouths = np.stack([(x + left * w) / width, (y + top * h) / height, (x + right * w) / width,
                       (y + bottom * h) / height], axis=1).clip(0.0, 1.0)
    low = np.percentile(mouths[:, :2], SPAN_PERCENTILE, axis=0)  # left, top
    high = np.percentile(mouths[:, 2:], 100 - SPAN_PERCENTILE, axis=0)  # right, bottom
    if not (low[0] < high[0] and low[1] < high[1]):
        return MouthBox(box=None, width=width, height=height, reason="the face boxes leave no mouth inside the frame")
    return MouthBox(box=(float(low[0]), float(low[1]), float(high[0]), float(high[1])), width=width, height=height)


def face_track_mouth_box(video: Path, width: int, height: int, center: tuple[float, float] | None,
                         sample_fps: float) -> MouthBox:
    """The mouth box of one clip's frames as the latents stage made them (cropped around ``center``, resized to
    ``width`` x ``height``), from a face detector run ``sample_fps`` times a second."""
    from avatar_gen.media.faces import detect_faces
    from avatar_gen.media.frames import fit_frames
    from avatar_gen.media.video import iter_frames

    face_boxes = [detect_faces(fit_frames(frame, height, width, center))
                  for _, frame in iter_frames(video, fps=sample_fps)]
    return mouth_box_from_faces(face_boxes, width, height)


def write_face_track_mouth_boxes(latents_dir: Path, out_dir: Path, sample_fps: float = 5.0,
                                 overwrite: bool = False) -> dict[str, int]:
    """A mouth box per clip the latents stage encoded (its ``_clips/<id>.json`` states: video, crop centre, size),
    written to ``out_dir/<clip_id>.json``; clips with a box file already are kept unless ``overwrite``.  A video that
    cannot be read is logged and left without a file (the trainer then names it).  Returns counts."""
    from avatar_gen.latents.encode import CLIP_STATE_DIR

    states = sorted((Path(latents_dir) / CLIP_STATE_DIR).glob("*.json"))
    if not states:
        raise UserError(f"{latents_dir}: no clip states ({CLIP_STATE_DIR}/<clip>.json): run the latents stage first")
    if sample_fps <= 0:
        raise UserError(f"sample_fps must be > 0, got {sample_fps}")
    counts = {"written": 0, "kept": 0, "no_mouth": 0, "failed": 0}
    data_root = Path(latents_dir).resolve().parent
    for state_path in progress(states, desc="mouth boxes", unit="clip"):
        # The state file's own name is the clip id the latents stage wrote (an id inside the file is not trusted as a
        # file name: it could lead out of the output folder).
        clip_id = state_path.stem
        if not overwrite and (Path(out_dir) / f"{clip_id}.json").is_file():
            counts["kept"] += 1
            continue
        try:
            state = read_json(state_path)
            if not isinstance(state, dict) or state.get("clip_id") != clip_id:
                raise ValueError(f"{state_path} is not the latents stage's state of clip {clip_id}")
            if state.get("status") not in ("done", "partial"):
                continue  # nothing of the clip was encoded: no chunk to weigh
            settings = state.get("settings") or {}
            center = state.get("face_center")
            video = data_path(state.get("video_path"), data_root, f"{state_path.name}'s video_path")
            box = face_track_mouth_box(video, int(settings["width"]), int(settings["height"]),
                                       None if center is None else (float(center[0]), float(center[1])), sample_fps)
        except (MediaError, OSError, KeyError, TypeError, ValueError, UserError) as exc:
            log.warning("%s: no mouth box (%s)", clip_id, exc)
            counts["failed"] += 1
            continue
        write_mouth_box(Path(out_dir), clip_id, box)
        counts["written"] += 1
        counts["no_mouth"] += box.box is None
    log.info("mouth boxes in %s: %d written (%d without a mouth: their tokens weigh 1), %d kept, %d failed", out_dir,
             counts["written"], counts["no_mouth"], counts["kept"], counts["failed"])
    return counts
