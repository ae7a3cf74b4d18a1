"""``python -m avatar_gen.toy measure-long``: drift over a minute of speech, on held-out portraits (issue 17).

Each case is a held-out clip's first frame (an unseen figure) speaking ``seconds`` of held-out speech: the sound of
that clip followed by the next held-out clips' (unseen sentences and voices), cut to exactly ``seconds``.  The video
is made by :meth:`AvatarGenerator.stream <avatar_gen.inference.AvatarGenerator.stream>` with the hand-off between
chunks given by ``handoff`` / ``handoff_frames`` / ``anchor`` (docs/inference.md, "Long speech"; one report per
setting compares them); each segment carries its chunk's record (plan, seconds, peak memory).  Figures per case
(:mod:`avatar_gen.evaluation.long_video`):

- flicker at the chunk boundaries / flicker inside the chunks (mean absolute frame difference); the boundary pairs
  are every pair of frames across which the video passes from one chunk to the next (:func:`handoff_pairs`: one pair
  with the frame hand-off, the whole cross-faded window with the latent one);
- identity SSIM to the portrait in the last ``identity_window`` s / in the first, at the portrait's own face box
  (:func:`~avatar_gen.evaluation.quality.identity_at_portrait_face`); the same at each frame's tracked face box is
  kept as ``identity_*_tracked`` (it moves with the detector on generated faces, see that function);
- mean colour shift (CIE L*a*b*, Delta E) between the first and the last ``colour_window`` s, next to the same shift
  within the ground-truth held-out clips (the threshold's reference: how much real footage of one figure varies);
- offline sync@0 in the last ``sync_window`` s / in the first;
- seconds and peak memory of the chunks listed in ``timing_chunks`` (by default chunk 1 and chunk 15).

Videos and figures are cached per case under ``<out>/cache`` like :mod:`avatar_gen.toy.measure`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from avatar_gen.inference.handoff import ANCHORS, HANDOFFS, handoff_defaults
from avatar_gen.limits import MAX_SPEECH_SECONDS
from avatar_gen.toy.measure import (
    DETECT_EVERY, SCORING_VERSION, CheckpointInfo, cache_key, HeldOutClip, HeldOutSet, LazyGenerator, MeasureSettings,
    VideoSampling, default_guidance, digest, prepare, report_header, video_sampling)
from avatar_gen.toy.measure_report import render_long_report, spread
from avatar_gen.utils.io import atomic_write_json, atomic_write_text, read_json
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

# 2: boundary flicker over every pair of a cross-faded hand-off (handoff_pairs); 3: identity at the portrait's face box
LONG_SCORING_VERSION = 3

REPORT_JSON = "measure-long.json"
REPORT_MARKDOWN = "measure-long.md"


class LongMeasureConfig(MeasureSettings):
    """``python -m avatar_gen.toy measure-long`` (the defaults are what issue 17 asks to measure)."""

    portraits: int = Field(default=8, ge=1, description="held-out portraits, one long video each")
    seconds: float = Field(default=60.0, gt=0, le=MAX_SPEECH_SECONDS, description="speech per video, s")
    identity_window: float = Field(default=5.0, gt=0, description="s at each end for the identity SSIM")
    colour_window: float = Field(default=5.0, gt=0, description="s at each end for the colour shift")
    sync_window: float = Field(default=10.0, gt=0, description="s at each end for the offline sync")
    timing_chunks: list[int] = Field(default_factory=lambda: [1, 15], min_length=1,
                                     description="chunks (from 0) whose seconds and peak memory are reported")
    handoff: Literal[HANDOFFS] = Field(default="auto", description="how a chunk continues the previous one")
    handoff_frames: int | None = Field(default=None, ge=1, description="latent frames handed over (latent)")
    anchor: Literal[ANCHORS] = Field(default="auto", description="identity anchor (latent hand-off); auto as inference")

    @field_validator("timing_chunks")
    @classmethod
    def _chunk_indices(cls, value: list[int]) -> list[int]:
        if any(index < 0 for index in value):
            raise ValueError("chunk indices start at 0")
        return sorted(set(value))


# ------------------------------------------------------------------------------------------------------ cases

def long_speech(held_out: HeldOutSet, start: int, seconds: float) -> tuple[np.ndarray, list[str]]:
    """``seconds`` of held-out speech (16 kHz): clip ``start``'s sound, then the next clips' in order (wrapping
    around), cut to length; returns it with the ids of the clips it holds."""
    from avatar_gen.media import SAMPLE_RATE

    wanted = int(round(seconds * SAMPLE_RATE))
    pieces, used, index = [], [], start
    while sum(len(piece) for piece in pieces) < wanted:
        clip = held_out.clips[index % len(held_out.clips)]
        pieces.append(clip.speech_16k())
        used.append(clip.clip_id)
        index += 1
    return np.concatenate(pieces)[:wanted], used


def window_means(values: list[float], first: slice, last: slice) -> tuple[float | None, float | None, float | None]:
    """Mean of ``values`` over two frame windows and last / first."""
    start = float(np.mean(values[first])) if values[first] else None
    end = float(np.mean(values[last])) if values[last] else None
    return start, end, (end / start if start and end is not None else None)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def handoff_pairs(chunks: list[dict[str, Any]]) -> list[int]:
    """Frames ``t`` whose pair (t - 1, t) spans a hand-off, from the generator's chunk records: from the first frame
    a continuing chunk delivered to its first new frame (with the frame hand-off those are the same frame; a
    cross-faded window passes from one chunk's decode to the next over all of its pairs)."""
    return [frame for chunk in chunks[1:]
            for frame in range(chunk["first_frame"], chunk["start"] + chunk["lead"] + chunk["overlap"] + 1)]


def score_long_video(video_path: Path, speech_16k: np.ndarray, portrait: np.ndarray, chunks: list[dict[str, Any]],
                     config: LongMeasureConfig) -> dict[str, Any]:
    """Boundary/inside flicker, identity SSIM, colour shift and sync at both ends of one long video."""
    from avatar_gen.evaluation.faces import FaceTrack, track_face
    from avatar_gen.evaluation.lipsync import offline_sync_at_zero
    from avatar_gen.evaluation.long_video import boundary_flicker, edge_windows, lab_colour_shift
    from avatar_gen.evaluation.quality import identity_at_portrait_face, temporal_stability
    from avatar_gen.media import SAMPLE_RATE, probe_video, read_frames

    fps = probe_video(video_path).fps
    frames = read_frames(video_path)
    flicker = boundary_flicker(frames, handoff_pairs(chunks))
    track = track_face(frames, detect_every=DETECT_EVERY)
    stability = temporal_stability(frames, track, anchor_image=portrait)
    first, last, identity_overlap = edge_windows(len(frames), fps, config.identity_window)
    identity = identity_at_portrait_face(frames, portrait)
    ssim_first, ssim_last, ssim_ratio = window_means(identity.per_frame, first, last)
    tracked_first, tracked_last, tracked_ratio = window_means(stability.drift_per_frame, first, last)
    colour_first, colour_last, colour_overlap = edge_windows(len(frames), fps, config.colour_window)
    sync_first_frames, sync_last_frames, sync_overlap = edge_windows(len(frames), fps, config.sync_window)

    def sync_in(window: slice) -> float | None:
        if track is None:
            return None
        samples = slice(int(round(window.start / fps * SAMPLE_RATE)), int(round(window.stop / fps * SAMPLE_RATE)))
        window_track = FaceTrack(boxes=track.boxes[window], detected=track.detected[window],
                                 sampled=None if track.sampled is None else track.sampled[window])
        return offline_sync_at_zero(frames[window], window_track, speech_16k[samples], fps)

    sync_first, sync_last = sync_in(sync_first_frames), sync_in(sync_last_frames)
    return {"num_frames": len(frames), "fps": fps, "seconds": round(len(frames) / fps, 3),
            "face_found_pct": 100.0 * track.detection_rate if track is not None else 0.0,
            "boundary_flicker": flicker.boundary, "inside_flicker": flicker.inside, "flicker_ratio": flicker.ratio,
            "num_boundaries": flicker.num_boundaries,
            "identity_ssim_first": ssim_first, "identity_ssim_last": ssim_last, "identity_ratio": ssim_ratio,
            "identity_region": identity.region,
            "identity_ssim_first_tracked": tracked_first, "identity_ssim_last_tracked": tracked_last,
            "identity_ratio_tracked": tracked_ratio, "identity_region_tracked": stability.drift_region,
            "colour_shift": lab_colour_shift(frames[colour_first], frames[colour_last]),
            "sync_first": sync_first, "sync_last": sync_last, "sync_ratio": ratio(sync_last, sync_first),
            "windows_overlap": {"identity": identity_overlap, "colour": colour_overlap, "sync": sync_overlap}}


def leaves_to_defaults(config: LongMeasureConfig) -> bool:
    """Whether the hand-off of ``config`` is partly what ``auto`` / an unset m resolve to (then the video's cache key
    holds :func:`~avatar_gen.inference.handoff.handoff_defaults`; a fully given hand-off keeps its videos across a
    change of defaults)."""
    return "auto" in (config.handoff, config.anchor) or (config.handoff != "frame" and config.handoff_frames is None)


def long_case(generator: LazyGenerator, model: CheckpointInfo, held_out: HeldOutSet, index: int, guidance: float,
              config: LongMeasureConfig, folder: Path) -> dict[str, Any]:
    """Generate (or take from ``folder``) one long video and its figures."""
    from avatar_gen.media import SAMPLE_RATE, write_wav

    case: HeldOutClip = held_out.clips[index]
    handoff = f"{config.handoff}{config.handoff_frames or ''}-{config.anchor}"
    sampling = video_sampling(config, guidance)
    key = (f"{case.clip_id}-{config.seconds:g}s-g{guidance:g}{sampling.suffix()}"
           f"-steps{config.steps}-seed{config.seed}-{handoff}")
    video_path, record_path, speech_path = (folder / f"{key}.mp4", folder / f"{key}.json", folder / f"{key}.wav")
    speech, speech_clips = long_speech(held_out, index, config.seconds)
    by_id = {clip.clip_id: clip for clip in held_out.clips}
    video_key = cache_key(checkpoint=model.fingerprint, portrait=case.fingerprint,
                          speech=[by_id[clip_id].fingerprint for clip_id in speech_clips], seconds=config.seconds,
                          guidance=guidance, steps=config.steps, seed=config.seed, handoff=config.handoff,
                          handoff_frames=config.handoff_frames, anchor=config.anchor,
                          **sampling.key(),
                          **({"handoff_defaults": handoff_defaults()} if leaves_to_defaults(config) else {}))
    scoring_key = cache_key(version=SCORING_VERSION, long_version=LONG_SCORING_VERSION, timing=config.timing_chunks,
                            windows=[config.identity_window, config.colour_window, config.sync_window])
    cached = read_json(record_path) or {}
    have_video = video_path.is_file() and cached.get("video_key") == video_key
    if have_video and cached.get("scoring_key") == scoring_key:
        return cached["case"]
    portrait = case.first_frame()
    chunks, handoff = (cached.get("chunks"), cached.get("handoff")) if have_video else (None, None)
    if chunks is None or handoff is None:
        write_wav(speech_path, speech, SAMPLE_RATE)
        chunks, handoff = generate_in_chunks(generator, portrait, speech_path, video_path, guidance, sampling,
                                             config)
    timing = {}
    for chunk_index in config.timing_chunks:
        chunk = chunks[chunk_index] if chunk_index < len(chunks) else None
        timing[str(chunk_index)] = None if chunk is None else {"seconds": chunk["seconds"],
                                                               "peak_memory_mb": chunk["peak_memory_mb"]}
    record = {"clip_id": case.clip_id, "speech_clips": speech_clips, "speech_seconds": config.seconds,
              "guidance": guidance, **sampling.record(),
              "steps": config.steps, "seed": config.seed, "video": video_path.name, "handoff": handoff,
              "num_chunks": len(chunks), "chunk_timing": timing,
              **score_long_video(video_path, speech, portrait, chunks, config)}
    atomic_write_json(record_path, {"video_key": video_key, "scoring_key": scoring_key, "chunks": chunks,
                                    "handoff": handoff, "case": record})
    return record


def generate_in_chunks(generator: LazyGenerator, portrait: np.ndarray, speech_path: Path, video_path: Path,
                       guidance: float, sampling: VideoSampling,
                       config: LongMeasureConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stream one video; the generator's record of every chunk (its plan, the frames it delivered, its seconds and
    peak memory: :attr:`GenerationResult.chunks <avatar_gen.inference.GenerationResult>`) and the hand-off used."""
    avatar = generator.get()
    segments = avatar.stream(portrait, audio=speech_path, output=video_path, steps=config.steps, guidance=guidance,
                             seed=config.seed, handoff=config.handoff, handoff_frames=config.handoff_frames,
                             anchor=config.anchor, chunk_memory=True, **sampling.generation_kwargs())
    for segment in segments:
        if segment.result is not None:
            return segment.result.chunks, segment.result.handoff
    raise RuntimeError("the stream ended without its result")


def ground_truth_colour_shift(held_out: HeldOutSet, window: float, cache: Path) -> dict[str, Any]:
    """The colour shift of the ground-truth held-out clips between their first and last ``window`` s (at most half
    of each clip): how much real footage of one figure varies, the reference for a drift threshold."""
    from avatar_gen.evaluation.long_video import edge_windows, lab_colour_shift
    from avatar_gen.media import read_frames

    key = digest({"clips": [clip.fingerprint for clip in held_out.clips], "window": window,
                  "version": SCORING_VERSION})
    path = cache / "long" / f"ground-truth-colour-{key[:24]}.json"
    cached = read_json(path)
    if cached is not None:
        return cached
    shifts = []
    for clip in progress(held_out.clips, desc="ground-truth colour", unit="clip"):
        frames = read_frames(clip.video_path)
        first, last, _ = edge_windows(len(frames), clip.fps, min(window, clip.duration / 2))
        shifts.append(lab_colour_shift(frames[first], frames[last]))
    result = {"colour_shift": spread(shifts), "window_seconds": window, "held_out": True,
              "note": f"first vs last {window:g} s of each ground-truth held-out clip, at most half of a clip "
                      f"({min(clip.duration for clip in held_out.clips):.1f}-"
                      f"{max(clip.duration for clip in held_out.clips):.1f} s long)"}
    atomic_write_json(path, result)
    return result


LONG_FIGURES = ("face_found_pct", "boundary_flicker", "inside_flicker", "flicker_ratio", "identity_ssim_first",
                "identity_ssim_last", "identity_ratio", "identity_ssim_first_tracked", "identity_ssim_last_tracked",
                "identity_ratio_tracked", "colour_shift", "sync_first", "sync_last", "sync_ratio")


def summarise_long(records: list[dict[str, Any]], timing_chunks: list[int]) -> dict[str, Any]:
    summary = {figure: spread([record[figure] for record in records]) for figure in LONG_FIGURES}
    # A weak sync's 10 s windows can score near 0 at the start, and a per-video ratio then explodes either way: the
    # ratio of the two windows' means over the videos (both windows scored) is the steadier reading of the sync bar.
    scored = [(record["sync_first"], record["sync_last"]) for record in records
              if record["sync_first"] is not None and record["sync_last"] is not None]
    summary["sync_ratio_of_means"] = {
        "ratio": ratio(float(np.mean([last for _, last in scored])), float(np.mean([first for first, _ in scored])))
        if scored else None, "n": len(scored), "of": len(records)}
    summary["chunk_timing"] = {}
    for chunk_index in timing_chunks:
        timings = [record["chunk_timing"].get(str(chunk_index)) for record in records]
        summary["chunk_timing"][str(chunk_index)] = {
            "seconds": spread([timing["seconds"] if timing else None for timing in timings]),
            "peak_memory_mb": spread([timing["peak_memory_mb"] if timing else None for timing in timings])}
    if len(timing_chunks) >= 2:
        first, last = str(timing_chunks[0]), str(timing_chunks[-1])
        summary["chunk_timing_ratio"] = {
            "chunks": [timing_chunks[0], timing_chunks[-1]],
            "seconds": spread([ratio(record["chunk_timing"][last]["seconds"], record["chunk_timing"][first]["seconds"])
                               if record["chunk_timing"][first] and record["chunk_timing"][last] else None
                               for record in records]),
            "peak_memory_mb": spread([ratio(record["chunk_timing"][last]["peak_memory_mb"],
                                            record["chunk_timing"][first]["peak_memory_mb"])
                                      if record["chunk_timing"][first] and record["chunk_timing"][last] else None
                                      for record in records])}
    return summary


def measure_long(config: LongMeasureConfig, command: str | None = None) -> dict[str, Any]:
    """The long-video report of every checkpoint: ``<out>/measure-long.json`` and ``.md``; returns the report."""
    held_out, models, cache = prepare(config)
    if config.portraits > len(held_out.clips):
        log.warning("only %d held-out clips: %d portraits instead of %d", len(held_out.clips), len(held_out.clips),
                    config.portraits)
    portraits = min(config.portraits, len(held_out.clips))
    guidance = config.guidance if config.guidance is not None else default_guidance()
    report = report_header(config, held_out, command)
    report["settings"] = {**config.model_dump(mode="json", exclude={"checkpoints", "held_out", "out", "device"}),
                          "guidance": guidance, **video_sampling(config).record()}
    report["ground_truth"] = ground_truth_colour_shift(held_out, config.colour_window, cache)
    report["checkpoints"] = {}
    for model in models:
        generator = LazyGenerator(model, config.device)
        folder = cache / "models" / model.cache_name / "long"
        records = [long_case(generator, model, held_out, index, guidance, config, folder)
                   for index in progress(range(portraits), desc=f"{model.name}: long videos", unit="video")]
        report["checkpoints"][model.name] = {
            "checkpoint": model.summary(), "n_cases": len(records), "held_out": True,
            "speech_seconds": config.seconds, "handoff": records[0]["handoff"],
            **summarise_long(records, config.timing_chunks), "cases": records}
    out = Path(config.out)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MARKDOWN, render_long_report(report))
    log.info("report: %s and %s", out / REPORT_JSON, out / REPORT_MARKDOWN)
    return report
