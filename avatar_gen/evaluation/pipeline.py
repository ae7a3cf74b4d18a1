"""Evaluate a folder of generated talking-head videos: per-clip metrics, set-level FVD, report.

One clip's record (a JSON dict) holds whatever could be measured; every metric that could not be
(no audio track, no face, clip too short, reference missing) leaves ``null`` and a line in
``problems``.  ``status`` is ``"ok"`` (everything asked for was measured), ``"partial"`` or
``"error"`` (the video itself could not be read, or is too large to evaluate).  Records are cached in
``<out>/clips/<id>.json`` with a fingerprint of the inputs and settings, so a re-run skips unchanged clips
(``overwrite`` redoes).

A clip's frames are held in memory while it is measured, so a clip (and its reference) is bounded before it is
decoded, from its header: sides up to :data:`MAX_SIDE`, frame rate up to :data:`MAX_FPS`, and frames x height x width
up to :data:`MAX_PIXELS` (the largest video inference makes); decoding stops at the same bound when a header lies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avatar_gen.errors import MediaError, UserError
from avatar_gen.evaluation.faces import FaceTrack, track_faces
from avatar_gen.evaluation.fvd import FVD_CLIP_FRAMES, VideoFeatureExtractor, feature_frechet_distance
from avatar_gen.evaluation.heldout import matches_heldout, read_heldout_ids
from avatar_gen.evaluation.lipsync import DEFAULT_MAX_LAG, OfflineSyncResult, mouth_opening, offline_sync_from_signals
from avatar_gen.evaluation.quality import compare_to_reference, temporal_stability
from avatar_gen.evaluation.report import write_report
from avatar_gen.evaluation.syncnet import SYNCNET_FPS, SyncNet, compute_lse, load_syncnet, syncnet_face_crops
from avatar_gen.limits import MAX_VIDEO_PIXELS
from avatar_gen.media import SAMPLE_RATE, extract_audio, probe_video, rms_envelope
from avatar_gen.media.video import VideoInfo, iter_frames
from avatar_gen.utils.io import atomic_write_json, read_json, remove_stale_temporaries
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RECORD_FORMAT_VERSION = 1
SILENCE_RMS = 1e-4  # a track quieter than this everywhere is treated as "no speech"
LENGTH_TOLERANCE_SECONDS = 0.1  # audio and video durations further apart than this are reported
DEFAULT_DETECT_EVERY = 2  # face detection on every 2nd frame: half the cost, boxes interpolated between
# Bounds on one clip, checked before decoding (see the module docstring).
MAX_SIDE = 4096  # px
MAX_FPS = 240.0
MAX_PIXELS = MAX_VIDEO_PIXELS  # frames x height x width: anything inference can make is evaluated


class ClipTooLarge(MediaError):
    """A clip (or reference) beyond the bounds evaluation holds in memory."""


def _check_clip_size(info: VideoInfo, fps: float, what: str) -> int:
    """The number of frames ``info``'s video may decode into at ``fps``; MediaError when it is beyond the bounds."""
    if max(info.width, info.height) > MAX_SIDE:
        raise ClipTooLarge(f"{what} is {info.width}x{info.height} px, larger than evaluation takes "
                         f"({MAX_SIDE} px a side)")
    if info.fps > MAX_FPS:
        raise ClipTooLarge(f"{what} runs at {info.fps:g} fps, above the {MAX_FPS:g} fps evaluation takes")
    budget = MAX_PIXELS // max(1, info.width * info.height)
    expected = int(math.ceil(max(info.duration, info.num_frames / info.fps if info.fps else 0.0) * fps))
    if expected > budget:
        raise ClipTooLarge(f"{what} holds {expected} frames of {info.width}x{info.height} at {fps:g} fps "
                         f"({expected * info.width * info.height / 1e9:.1f} gigapixels), more than evaluation takes "
                         f"({MAX_PIXELS / 1e9:.1f} gigapixels)")
    return budget


def read_clip_frames(path: str | os.PathLike, info: VideoInfo, fps: float, what: str = "the video",
                     keep: int | None = None) -> tuple[np.ndarray, int]:
    """Frames of ``path`` resampled to ``fps`` as uint8 [T, H, W, 3], within the bounds above.

    ``keep``: hold only the first ``keep`` frames (and count the others).  Returns (frames, frames in the video).
    Raises MediaError for an unreadable video and ClipTooLarge for one beyond the bounds (before decoding when its
    header tells, else as soon as decoding passes them).
    """
    budget = _check_clip_size(info, fps, what)
    frames: list[np.ndarray] = []
    count = 0
    for _, frame in iter_frames(path, fps=fps):
        if frame.shape[:2] != (info.height, info.width):
            raise MediaError(f"{what} changes its frame size midway ({info.width}x{info.height} to "
                             f"{frame.shape[1]}x{frame.shape[0]})")
        count += 1
        if count > budget:
            raise ClipTooLarge(f"{what} decodes into more than {budget} frames of {info.width}x{info.height}, more "
                             f"than evaluation takes ({MAX_PIXELS / 1e9:.1f} gigapixels)")
        if keep is None or len(frames) < keep:
            frames.append(frame)
    if not frames:
        raise MediaError(f"no frames decoded from {path}")
    return np.stack(frames), count


def _json_number(value: float | None) -> float | str | None:
    """JSON has no inf/NaN: inf is written as the string "inf" (e.g. PSNR of identical frames), NaN as null."""
    if value is None:
        return None
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def _clean_for_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {key: _clean_for_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_for_json(value) for value in obj]
    if isinstance(obj, (float, np.floating)):
        return _json_number(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _file_fingerprint(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _boxes_at_times(track: FaceTrack, source_fps: float, target_times: np.ndarray) -> FaceTrack:
    """The track resampled to other frame times (sample-and-hold like the frame reader, via nearest index)."""
    indices = np.clip(np.floor(target_times * source_fps + 1e-4).astype(int), 0, len(track.boxes) - 1)
    return FaceTrack(boxes=track.boxes[indices], detected=track.detected[indices],
                     sampled=None if track.sampled is None else track.sampled[indices])


def evaluate_clip(video_path: str | os.PathLike, reference_path: str | os.PathLike | None = None,
                  syncnet: SyncNet | None = None, input_image: np.ndarray | None = None,
                  max_lag: int = DEFAULT_MAX_LAG, detect_every: int = DEFAULT_DETECT_EVERY,
                  fvd_extractor: VideoFeatureExtractor | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All per-clip metrics of one video; never raises for a bad clip (problems are recorded).

    Returns ``(record, fvd_features)`` where ``fvd_features`` maps ``"generated"``/``"reference"`` to a
    feature vector [D] when ``fvd_extractor`` is given and the clip is long enough.
    """
    video_path = Path(video_path)
    record: dict[str, Any] = {
        "clip_id": video_path.stem, "video_path": str(video_path), "status": "ok", "problems": [],
        "video": None, "face": None, "offline_sync": None, "syncnet": None, "reference": None, "temporal": None,
    }
    problems: list[str] = record["problems"]
    features: dict[str, np.ndarray] = {}
    try:
        info = probe_video(video_path)
        frames, _ = read_clip_frames(video_path, info, info.fps)
    except ClipTooLarge as exc:
        record["status"] = "error"
        problems.append(f"not evaluated: {exc}")
        return record, features
    except MediaError as exc:
        record["status"] = "error"
        problems.append(f"unreadable video: {exc}")
        return record, features
    fps = info.fps
    record["video"] = {
        "fps": fps, "num_frames": len(frames), "width": info.width, "height": info.height,
        "duration_s": len(frames) / fps, "has_audio": info.has_audio, "audio_duration_s": info.audio_duration,
    }

    audio: np.ndarray | None = None
    if not info.has_audio:
        problems.append("no audio track: lip-sync metrics skipped")
    else:
        # Audio past the video's end is never measured: decoding stops a little after it (enough to tell that the
        # lengths differ), so a long sound track costs no memory.
        decode_seconds = len(frames) / fps + 2 * LENGTH_TOLERANCE_SECONDS
        try:
            audio = extract_audio(video_path, SAMPLE_RATE, max_duration=decode_seconds)
        except MediaError as exc:
            problems.append(f"audio unreadable: {exc}")
        if audio is not None:
            audio_seconds = len(audio) / SAMPLE_RATE
            if audio_seconds >= decode_seconds - 1.0 / SAMPLE_RATE and info.audio_duration:
                audio_seconds = max(audio_seconds, info.audio_duration)  # cut short: the header tells the length
            record["video"]["audio_duration_s"] = audio_seconds
            if abs(audio_seconds - len(frames) / fps) > LENGTH_TOLERANCE_SECONDS:
                problems.append(f"audio ({audio_seconds:.2f} s) and video ({len(frames) / fps:.2f} s) lengths differ")
            if audio.size == 0 or float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENCE_RMS:
                problems.append("audio is silent: lip-sync metrics skipped")
                audio = None

    tracks = track_faces(frames, detect_every=detect_every)
    track = tracks[0] if tracks else None  # the largest face, unless another one turns out to be the speaker
    if not tracks:
        problems.append("no face found: lip-sync metrics skipped, drift measured on the whole frame")

    if tracks and audio is not None:
        loudness = rms_envelope(audio, SAMPLE_RATE, fps, len(frames))
        scored: list[tuple[OfflineSyncResult, int]] = []
        for number, candidate in enumerate(tracks):
            try:
                scored.append((offline_sync_from_signals(mouth_opening(frames, candidate), loudness, fps, max_lag),
                               number))
            except ValueError as exc:
                failure = str(exc)
        if scored:
            # Several faces: the speaker is the one whose mouth follows the speech best (at any lag).
            result, speaker = max(scored, key=lambda item: item[0].best_correlation)
            track = tracks[speaker]
            record["offline_sync"] = asdict(result)
        else:
            problems.append(f"offline sync score: {failure}")
        if syncnet is not None:
            record["syncnet"] = _syncnet_record(video_path, frames, fps, track, audio, syncnet, max_lag, problems)
    if track is not None:
        speaker_index = next(number for number, candidate in enumerate(tracks) if candidate is track)
        record["face"] = {"num_faces": len(tracks), "speaker_index": speaker_index,
                          "detection_rate": track.detection_rate,
                          "mean_box_xywh": [float(v) for v in track.boxes.mean(axis=0)]}

    record["temporal"] = {key: value for key, value in asdict(temporal_stability(frames, track, input_image)).items()
                          if key != "drift_per_frame"}

    if reference_path is not None:
        try:
            # Frames are compared by index: only as many reference frames as the clip has are kept.
            reference_frames, reference_count = read_clip_frames(reference_path, probe_video(reference_path), fps,
                                                                 what="the reference", keep=len(frames))
        except ClipTooLarge as exc:
            problems.append(f"reference not compared: {exc}")
        except MediaError as exc:
            problems.append(f"reference unreadable: {exc}")
        else:
            comparison = asdict(compare_to_reference(frames, reference_frames))
            comparison["frames_reference"] = reference_count
            comparison.pop("ssim_per_frame")
            comparison["reference_path"] = str(reference_path)
            record["reference"] = comparison
            if comparison["frames_generated"] != comparison["frames_reference"]:
                problems.append(f"length mismatch: {comparison['frames_generated']} generated vs "
                                f"{comparison['frames_reference']} reference frames; compared the first "
                                f"{comparison['frames_compared']}")
            if fvd_extractor is not None:
                reference_clip = fvd_extractor.prepare(reference_frames)
                if reference_clip is not None:
                    features["reference"] = fvd_extractor.features(reference_clip)
    if fvd_extractor is not None:
        clip = fvd_extractor.prepare(frames)
        if clip is None:
            problems.append(f"shorter than {FVD_CLIP_FRAMES} frames: left out of FVD")
        else:
            features["generated"] = fvd_extractor.features(clip)

    if problems:
        record["status"] = "partial"
    return record, features


def _syncnet_record(video_path: Path, frames: np.ndarray, fps: float, track: FaceTrack, audio: np.ndarray,
                    syncnet: SyncNet, max_offset: int, problems: list[str]) -> dict[str, Any] | None:
    """LSE-C/D at 25 fps (the clip is resampled when it has another rate); ``audio`` is 16 kHz as SyncNet wants."""
    if abs(fps - SYNCNET_FPS) > 1e-3:
        try:
            frames, _ = read_clip_frames(video_path, probe_video(video_path), SYNCNET_FPS)
        except MediaError as exc:
            problems.append(f"SyncNet: {exc}")
            return None
        track = _boxes_at_times(track, fps, np.arange(len(frames)) / SYNCNET_FPS)
    try:
        result = compute_lse(syncnet, syncnet_face_crops(frames, track), audio, max_offset=max_offset)
    except ValueError as exc:
        problems.append(f"SyncNet: {exc}")
        return None
    return {**asdict(result), "audio_delay_frames": result.audio_delay_frames}


def _find_files(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    return {path.stem: path for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix.lower() in extensions and not path.name.startswith(".")}


def _settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_directory(generated_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       reference_dir: str | os.PathLike | None = None, syncnet_path: str | os.PathLike | None = None,
                       i3d_path: str | os.PathLike | None = None, heldout: str | os.PathLike | None = None,
                       input_images_dir: str | os.PathLike | None = None, max_lag: int = DEFAULT_MAX_LAG,
                       detect_every: int = DEFAULT_DETECT_EVERY, overwrite: bool = False,
                       device: str = "cpu") -> dict[str, Any]:
    """Evaluate every video in ``generated_dir``; write ``metrics.json``, ``report.md`` and plots to ``out_dir``.

    ``reference_dir``: videos with the same file stem as the generated ones (PSNR, SSIM, FVD).
    ``heldout``: a file listing held-out clip ids (see :func:`read_heldout_ids`); only those clips are
    evaluated.  ``input_images_dir``: the input portraits ``<id>.png|jpg`` (drift anchor; else frame 0).
    Returns the metrics dict written to ``metrics.json``.
    """
    generated_dir = Path(generated_dir)
    if not generated_dir.is_dir():
        raise UserError(f"generated-video folder not found: {generated_dir}")
    reference_dir = Path(reference_dir) if reference_dir is not None else None
    if reference_dir is not None and not reference_dir.is_dir():
        raise UserError(f"reference folder not found: {reference_dir}")
    if input_images_dir is not None and not Path(input_images_dir).is_dir():
        raise UserError(f"input-image folder not found: {input_images_dir}")
    if max_lag < 1:
        raise UserError(f"max lag must be at least 1 frame, got {max_lag}")
    out_dir = Path(out_dir)
    clips_dir = out_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    remove_stale_temporaries(clips_dir)

    videos = _find_files(generated_dir, VIDEO_EXTENSIONS)
    heldout_ids: list[str] | None = None
    missing_heldout: list[str] = []
    if heldout is not None:
        heldout_ids = read_heldout_ids(heldout)
        heldout_set = set(heldout_ids)
        videos = {stem: path for stem, path in videos.items() if matches_heldout(stem, heldout_set)}
        covered = {matches_heldout(stem, heldout_set) for stem in videos}
        missing_heldout = [clip_id for clip_id in heldout_ids if clip_id not in covered]
        if missing_heldout:
            log.warning("%d held-out clips have no generated video (first: %s)", len(missing_heldout),
                        missing_heldout[0])
    if not videos:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) to evaluate in {generated_dir}"
                        + (" that match the held-out list" if heldout is not None else ""))
    references = _find_files(reference_dir, VIDEO_EXTENSIONS) if reference_dir is not None else {}
    input_images = _find_files(Path(input_images_dir), IMAGE_EXTENSIONS) if input_images_dir is not None else {}

    syncnet = load_syncnet(syncnet_path, device=device) if syncnet_path is not None else None
    fvd_extractor = VideoFeatureExtractor(i3d_path, device=device) if i3d_path is not None else None
    if fvd_extractor is not None and reference_dir is None:
        raise UserError("FVD compares against references: give --reference together with --i3d")
    settings = {
        "format_version": RECORD_FORMAT_VERSION, "max_lag_frames": max_lag, "detect_every": detect_every,
        "syncnet": _file_fingerprint(Path(syncnet_path)) if syncnet_path else None,
        "i3d": _file_fingerprint(Path(i3d_path)) if i3d_path else None,
    }
    digest = _settings_digest(settings)

    records: dict[str, dict[str, Any]] = {}
    generated_features, reference_features = [], []
    for clip_id, video_path in progress(videos.items(), desc="evaluate", total=len(videos), unit="clip"):
        reference_path = references.get(clip_id)
        image_path = input_images.get(clip_id)
        fingerprint = {"settings": digest, "video": _file_fingerprint(video_path),
                       "reference": _file_fingerprint(reference_path), "input_image": _file_fingerprint(image_path)}
        cache_path = clips_dir / f"{clip_id}.json"
        cached = None if overwrite else read_json(cache_path)
        # FVD features are not cached: with an extractor every clip is re-read.
        if cached is not None and cached.get("fingerprint") == fingerprint and fvd_extractor is None:
            records[clip_id] = cached["record"]
            continue
        input_image = None
        record_problems: list[str] = []
        if image_path is not None:
            try:
                input_image = _read_image(image_path)
            except MediaError as exc:
                record_problems.append(f"input image unreadable, drift anchored at frame 0: {exc}")
        record, features = evaluate_clip(video_path, reference_path, syncnet=syncnet, input_image=input_image,
                                         max_lag=max_lag, detect_every=detect_every, fvd_extractor=fvd_extractor)
        if reference_dir is not None and reference_path is None:
            record_problems.append(f"no reference video named {clip_id}.* in {reference_dir}")
        if record_problems:
            record["problems"].extend(record_problems)
            if record["status"] == "ok":
                record["status"] = "partial"
        record = _clean_for_json(record)
        atomic_write_json(cache_path, {"fingerprint": fingerprint, "record": record})
        records[clip_id] = record
        if "generated" in features:
            generated_features.append(features["generated"])
        if "reference" in features:
            reference_features.append(features["reference"])
        log.info("%s: %s%s", clip_id, record["status"], f" ({'; '.join(record['problems'])})" if record["problems"]
                 else "")

    fvd = None
    if fvd_extractor is not None:
        fvd = {"extractor": fvd_extractor.path, "extractor_kind": fvd_extractor.kind,
               "num_generated": len(generated_features),
               "num_reference": len(reference_features), "value": None}
        if len(generated_features) >= 2 and len(reference_features) >= 2:
            fvd["value"] = feature_frechet_distance(np.stack(generated_features), np.stack(reference_features))
            if min(len(generated_features), len(reference_features)) <= len(generated_features[0]):
                fvd["note"] = "fewer clips than feature dimensions: the covariances are singular, FVD is noisy"
        else:
            fvd["note"] = "FVD needs at least 2 generated and 2 reference clips of 16+ frames"

    metrics = _clean_for_json({
        "generated_dir": str(generated_dir), "reference_dir": str(reference_dir) if reference_dir else None,
        "settings": settings, "heldout": {"file": str(heldout), "num_ids": len(heldout_ids),
                                          "missing_generated": missing_heldout} if heldout_ids is not None else None,
        "aggregates": aggregate(records), "fvd": fvd, "clips": records,
    })
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_report(metrics, out_dir)
    return metrics


# (section, key) pairs summarised over clips in "aggregates".
AGGREGATED_METRICS = (
    ("offline_sync", "score"), ("offline_sync", "best_lag"), ("offline_sync", "best_correlation"),
    ("offline_sync", "confidence"), ("syncnet", "lse_d"), ("syncnet", "lse_c"), ("syncnet", "audio_delay_frames"),
    ("reference", "psnr_db"), ("reference", "ssim"), ("temporal", "flicker_mean"), ("temporal", "flicker_max"),
    ("temporal", "drift_ssim_mean"), ("temporal", "drift_ssim_last"),
)


def _as_float(value: Any) -> float | None:
    if value in ("inf", "-inf"):
        return math.inf if value == "inf" else -math.inf
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def aggregate(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts per status, and mean/median/std/min/max of every metric in :data:`AGGREGATED_METRICS` over the
    clips that have it (inf values, e.g. PSNR of identical clips, make mean/median inf and std null)."""
    statuses = [record["status"] for record in records.values()]
    summary: dict[str, Any] = {"num_clips": len(records),
                               "num_ok": statuses.count("ok"), "num_partial": statuses.count("partial"),
                               "num_error": statuses.count("error")}
    for section, key in AGGREGATED_METRICS:
        values = [_as_float((record.get(section) or {}).get(key)) for record in records.values()]
        values = [value for value in values if value is not None and not math.isnan(value)]
        if not values:
            continue
        array = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(array).all()
        summary[f"{section}.{key}"] = {
            "count": len(values), "mean": float(array.mean()) if finite else float(np.inf),
            "median": float(np.median(array)), "std": float(array.std()) if finite else None,
            "min": float(array.min()), "max": float(array.max()),
        }
    return summary
