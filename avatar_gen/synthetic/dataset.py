"""Synthetic talking-face clips with ground truth, in the shape of an AVSpeech download.

``generate_dataset(out_dir, ...)`` writes::

    out_dir/clips/<id>.mp4           H.264 (yuv420p) + AAC speech, ``size``x``size`` at ``fps``
    out_dir/ground_truth/<id>.json   {clip_id, kind, seed, text, words, fps, num_frames, duration,
                                      mouth_open: [per frame 0..1], face: {x, y}, faces: [{x, y}, ...],
                                      audio: {sample_rate, speech_start, speech_end}, voice, rate_wpm}
    out_dir/avspeech.csv             AVSpeech rows, no header: id,start,end,face_x,face_y

Each clip shows a drawn half-body figure (random skin, hair, clothes, background, position and
scale) that blinks and moves its head a little, and whose mouth opening in frame i is the speech's
RMS loudness around time i / fps (:func:`avatar_gen.media.rms_envelope`), scaled to 0..1.  The
speech is real espeak-ng TTS of a random English sentence.  Kinds: ``speech`` (one talking face),
``two_faces`` (two figures side by side, the left one talks; ``face`` is the talker), ``silent``
(closed mouth, silent audio track).  Everything follows from ``(seed, clip index)``: the same seed
gives the same ids, text, ground truth and frames.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from avatar_gen.audio.tts import Speech, synthesize
from avatar_gen.errors import UserError
from avatar_gen.media.audio import SAMPLE_RATE, rms_envelope
from avatar_gen.media.video import write_video
from avatar_gen.latents.regions import MouthBox, write_mouth_box
from avatar_gen.synthetic.figure import (MOUTH_HALF_HEIGHT_RADII, MOUTH_HALF_WIDTH_RADII, MOUTH_OFFSET, FigurePose,
                                         FigureStyle, background, draw_figure)
from avatar_gen.synthetic.sentences import random_text
from avatar_gen.utils.io import atomic_path, atomic_write_json, atomic_write_text, read_json, remove_stale_temporaries
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

KINDS = ("speech", "two_faces", "silent")
CSV_NAME = "avspeech.csv"
CLIPS_DIR = "clips"
GROUND_TRUTH_DIR = "ground_truth"
MOUTH_BOXES_DIR = "mouth_boxes"  # one avatar_gen.latents.regions box per clip, from the ground truth
GROUND_TRUTH_VERSION = 1

VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f2", "en-us+f4")


@dataclass(frozen=True)
class Framing:
    """Where a talking figure sits in the frame (fractions of the frame size).

    ``half_body`` is what AVSpeech-like footage shows; ``close_up`` fills the frame with the face so that the mouth
    stays large at a small frame size (the toy world trains at 128 px, where a half-body face is too small for the
    offline lip-sync measure).
    """

    head_radius: float  # head half-width / frame size, before the per-clip scale
    scale_range: tuple[float, float]  # per-clip random scale of the head
    centre_x_jitter: float  # head centre x = 0.5 +- this
    centre_y: float  # head centre y
    centre_y_jitter: float


FRAMINGS = {
    "half_body": Framing(head_radius=0.17, scale_range=(0.8, 1.2), centre_x_jitter=0.1, centre_y=0.4,
                         centre_y_jitter=0.05),
    "close_up": Framing(head_radius=0.3, scale_range=(0.9, 1.1), centre_x_jitter=0.04, centre_y=0.45,
                        centre_y_jitter=0.03),
}
SPEECH_RATES_WPM = (150, 190)
WORDS_PER_SECOND = 2.6  # espeak at ~170 wpm with sentence pauses, to size the text to the clip
LEAD_IN_SECONDS = (0.05, 0.3)  # silence before the first word (AVSpeech segments start near speech)
TAIL_SECONDS = 0.25  # at least this much silence after the last word
# Mouth opening = envelope / (this percentile of the voiced envelope), clipped to 1.
MOUTH_REFERENCE_PERCENTILE = 90
BLINK_FRAMES_PROFILE = (0.55, 0.1, 0.0, 0.1, 0.55)  # eye openness over a blink
BLINK_INTERVAL_SECONDS = (1.5, 4.5)
ENCODER_PRESET = "veryfast"  # small synthetic frames: speed over compression
ENCODER_CRF = 20


@dataclass(frozen=True)
class SyntheticClip:
    """One generated clip; paths are absolute."""

    clip_id: str
    kind: str
    video_path: Path
    ground_truth_path: Path
    text: str
    fps: float
    num_frames: int
    duration: float  # seconds, == num_frames / fps
    face_x: float  # talking face centre, normalised to the frame width (0..1)
    face_y: float  # ... and height

    def avspeech_row(self) -> str:
        """``id,start,end,face_x,face_y`` as in AVSpeech's CSV (the clip is the whole segment)."""
        return f"{self.clip_id},{0.0:.6f},{self.duration:.6f},{self.face_x:.6f},{self.face_y:.6f}"


def clip_id_for(seed: int, index: int) -> str:
    """A YouTube-like 11-character id ([A-Za-z0-9_-]) that depends only on (seed, index)."""
    digest = hashlib.sha256(f"avatar-gen-synthetic:{seed}:{index}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:11]


def _clip_rng(seed: int, index: int, purpose: str) -> np.random.Generator:
    tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, index, tag])


def _kind_plan(num_clips: int, two_face_clips: int, silent_clips: int) -> list[str]:
    return ["speech"] * num_clips + ["two_faces"] * two_face_clips + ["silent"] * silent_clips


def generate_dataset(out_dir: str | os.PathLike, num_clips: int = 4, seed: int = 0, size: int = 256, fps: float = 25,
                     min_seconds: float = 3.0, max_seconds: float = 8.0, two_face_clips: int = 0,
                     silent_clips: int = 0, overwrite: bool = False, framing: str = "half_body",
                     voices: Sequence[str] | None = None) -> list[SyntheticClip]:
    """Write ``num_clips`` talking clips, then ``two_face_clips`` and ``silent_clips`` extra ones.

    ``framing``: a key of :data:`FRAMINGS`; ``voices``: the espeak voices to draw from (default :data:`VOICES`), so
    that a held-out set can speak with voices no training clip used.

    Clips already complete in ``out_dir`` (video and ground truth present, same generation
    parameters) are kept unless ``overwrite``; ``avspeech.csv`` always lists exactly the clips of
    this call, in order.  Returns the clips in that order.
    """
    if num_clips < 0 or two_face_clips < 0 or silent_clips < 0:
        raise UserError("clip counts must be >= 0")
    if num_clips + two_face_clips + silent_clips == 0:
        raise UserError("nothing to generate: num_clips, two_face_clips and silent_clips are all 0")
    if size < 64 or size % 2:
        raise UserError(f"size must be an even number of pixels >= 64, got {size}")
    if not 1 <= fps <= 120:
        raise UserError(f"fps must be within 1..120, got {fps}")
    if not 1.0 <= min_seconds <= max_seconds:
        raise UserError(f"need 1 <= min_seconds <= max_seconds, got {min_seconds} and {max_seconds}")
    if framing not in FRAMINGS:
        raise UserError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    voices = tuple(VOICES if voices is None else voices)
    if not voices or any(not voice or not isinstance(voice, str) for voice in voices):
        raise UserError(f"voices must be a non-empty list of espeak voice names, got {list(voices)}")
    out_dir = Path(out_dir)
    clips_dir, truth_dir = out_dir / CLIPS_DIR, out_dir / GROUND_TRUTH_DIR
    clips_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, clips_dir, truth_dir, out_dir / MOUTH_BOXES_DIR):
        remove_stale_temporaries(folder)

    parameters = {"size": size, "fps": fps, "min_seconds": min_seconds, "max_seconds": max_seconds,
                  "framing": framing, "voices": list(voices)}
    clips = []
    plan = _kind_plan(num_clips, two_face_clips, silent_clips)
    for index, kind in enumerate(progress(plan, desc="synthetic clips", unit="clip")):
        clip_id = clip_id_for(seed, index)
        video_path, truth_path = clips_dir / f"{clip_id}.mp4", truth_dir / f"{clip_id}.json"
        existing = read_json(truth_path) if truth_path.exists() and video_path.exists() else None
        if (not overwrite and existing is not None and existing.get("kind") == kind
                and existing.get("generation") == parameters and existing.get("seed") == seed):
            log.debug("keeping %s (%s)", clip_id, kind)
            truth = existing
        else:
            truth = _generate_clip(video_path, clip_id, kind, seed, index, size, fps, min_seconds, max_seconds,
                                   FRAMINGS[framing], voices)
            truth["generation"] = parameters
            atomic_write_json(truth_path, truth)
        write_mouth_box(out_dir / MOUTH_BOXES_DIR, clip_id, truth_mouth_box(truth))
        clips.append(_clip_from_truth(truth, video_path, truth_path))
    atomic_write_text(out_dir / CSV_NAME, "".join(clip.avspeech_row() + "\n" for clip in clips))
    log.info("wrote %d synthetic clips to %s", len(clips), out_dir)
    return clips


def load_ground_truth(path: str | os.PathLike) -> dict[str, Any]:
    """Read one ``ground_truth/<id>.json``."""
    truth = read_json(path)
    if truth is None:
        raise UserError(f"ground truth not found: {path}")
    return truth


def truth_mouth_box(truth: dict[str, Any]) -> MouthBox:
    """The box the talking mouth stays in (the toy VAE weighs it too): its rest centre +- a wide-open mouth's half
    size, in fractions of the clip's frame, clipped to the frame."""
    half_width = MOUTH_HALF_WIDTH_RADII * truth["head_radius"] / truth["width"]
    half_height = MOUTH_HALF_HEIGHT_RADII * truth["head_radius"] / truth["height"]
    x, y = truth["mouth"]["x"], truth["mouth"]["y"]
    box = (max(0.0, x - half_width), max(0.0, y - half_height), min(1.0, x + half_width), min(1.0, y + half_height))
    return MouthBox(box=box, width=int(truth["width"]), height=int(truth["height"]))


def _clip_from_truth(truth: dict[str, Any], video_path: Path, truth_path: Path) -> SyntheticClip:
    return SyntheticClip(clip_id=truth["clip_id"], kind=truth["kind"], video_path=video_path.resolve(),
                         ground_truth_path=truth_path.resolve(), text=truth["text"], fps=truth["fps"],
                         num_frames=truth["num_frames"], duration=truth["duration"], face_x=truth["face"]["x"],
                         face_y=truth["face"]["y"])


def _speech_for_clip(rng: np.random.Generator, min_seconds: float, max_seconds: float, lead_in: float,
                     voices: Sequence[str] = VOICES) -> tuple[Speech, str, str, int, float]:
    """Synthesise a random text that fits the clip; returns (speech, text, voice, rate, clip duration)."""
    target = rng.uniform(min_seconds, max_seconds)
    voice = voices[rng.integers(len(voices))]
    rate = int(rng.integers(SPEECH_RATES_WPM[0], SPEECH_RATES_WPM[1] + 1))
    room = max_seconds - lead_in - TAIL_SECONDS
    words = random_text(rng, min_words=max(2, int((target - lead_in - TAIL_SECONDS) * WORDS_PER_SECOND))).split()
    speech = synthesize(" ".join(words), voice=voice, sample_rate=SAMPLE_RATE, rate_wpm=rate)
    # Too long for the clip: cut words (in proportion to the overshoot) until it fits.
    while speech.duration > room and len(words) > 1:
        keep = max(1, min(len(words) - 1, int(len(words) * room / speech.duration)))
        words = words[:keep]
        words[-1] = words[-1].rstrip(",.") + "."
        speech = synthesize(" ".join(words), voice=voice, sample_rate=SAMPLE_RATE, rate_wpm=rate)
    duration = float(np.clip(max(target, lead_in + speech.duration + TAIL_SECONDS), min_seconds, max_seconds))
    return speech, " ".join(words), voice, rate, duration


def mouth_from_envelope(envelope: np.ndarray) -> np.ndarray:
    """Mouth opening 0..1 per frame: the loudness envelope over a high percentile of its voiced part."""
    envelope = np.asarray(envelope, dtype=np.float64)
    if envelope.size == 0 or envelope.max() <= 0:
        return np.zeros(envelope.shape, dtype=np.float64)
    voiced = envelope[envelope > 0.05 * envelope.max()]
    reference = np.percentile(voiced, MOUTH_REFERENCE_PERCENTILE)
    return np.clip(envelope / max(reference, 1e-9), 0.0, 1.0)


def _blink_track(rng: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
    """Eye openness per frame: open, with a short blink every 1.5-4.5 s."""
    eyes = np.ones(num_frames)
    frame = int(rng.uniform(0.3, BLINK_INTERVAL_SECONDS[1]) * fps)
    while frame < num_frames:
        for offset, openness in enumerate(BLINK_FRAMES_PROFILE):
            if frame + offset < num_frames:
                eyes[frame + offset] = openness
        frame += len(BLINK_FRAMES_PROFILE) + int(rng.uniform(*BLINK_INTERVAL_SECONDS) * fps)
    return eyes


def _sway(rng: np.random.Generator, num_frames: int, fps: float, amplitude: float) -> np.ndarray:
    """Slow head motion in pixels: two incommensurate sines with random phases."""
    t = np.arange(num_frames) / fps
    f1, f2 = rng.uniform(0.15, 0.4), rng.uniform(0.5, 0.9)
    p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
    return amplitude * (0.7 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2))


@dataclass
class _FigureTrack:
    """A figure's look and its per-frame motion."""

    style: FigureStyle
    head_x: np.ndarray  # [frames] pixels
    head_y: np.ndarray
    body_x: np.ndarray
    head_radius: float
    mouth_open: np.ndarray  # [frames] 0..1
    eye_open: np.ndarray

    def pose(self, frame: int) -> FigurePose:
        return FigurePose(head_x=float(self.head_x[frame]), head_y=float(self.head_y[frame]),
                          head_radius=self.head_radius, mouth_open=float(self.mouth_open[frame]),
                          eye_open=float(self.eye_open[frame]), body_x=float(self.body_x[frame]))


def _figure_track(rng: np.random.Generator, num_frames: int, fps: float, centre_x: float, centre_y: float,
                  head_radius: float, mouth_open: np.ndarray) -> _FigureTrack:
    sway_x = _sway(rng, num_frames, fps, amplitude=0.05 * head_radius)
    sway_y = _sway(rng, num_frames, fps, amplitude=0.03 * head_radius)
    return _FigureTrack(style=FigureStyle.random(rng), head_x=centre_x + sway_x, head_y=centre_y + sway_y,
                        body_x=centre_x + 0.3 * sway_x, head_radius=head_radius, mouth_open=mouth_open,
                        eye_open=_blink_track(rng, num_frames, fps))


def _render(backdrop: np.ndarray, tracks: list[_FigureTrack], num_frames: int) -> Iterator[np.ndarray]:
    for frame in range(num_frames):
        image = backdrop.copy()
        for track in tracks:
            draw_figure(image, track.style, track.pose(frame))
        yield image


def _generate_clip(video_path: Path, clip_id: str, kind: str, seed: int, index: int, size: int, fps: float,
                   min_seconds: float, max_seconds: float, framing: Framing = FRAMINGS["half_body"],
                   voices: Sequence[str] = VOICES) -> dict[str, Any]:
    rng = _clip_rng(seed, index, "clip")
    lead_in = float(rng.uniform(*LEAD_IN_SECONDS))
    if kind == "silent":
        speech, text, voice, rate = None, "", None, None
        duration = float(rng.uniform(min_seconds, max_seconds))
    else:
        speech, text, voice, rate, duration = _speech_for_clip(rng, min_seconds, max_seconds, lead_in, voices)
    num_frames = max(1, int(round(duration * fps)))
    duration = num_frames / fps
    audio = np.zeros(int(round(duration * SAMPLE_RATE)), dtype=np.float32)
    words: list[dict[str, Any]] = []
    speech_end = lead_in
    if speech is not None:
        start = int(round(lead_in * SAMPLE_RATE))
        length = min(len(speech.audio), len(audio) - start)
        audio[start:start + length] = speech.audio[:length]
        speech_end = lead_in + length / SAMPLE_RATE
        words = [{"word": w["word"], "start": round(w["start"] + lead_in, 4), "end": round(w["end"] + lead_in, 4)}
                 for w in speech.words if w["start"] + lead_in < duration]
    mouth = mouth_from_envelope(rms_envelope(audio, SAMPLE_RATE, fps, num_frames))

    backdrop = background(size, size, rng)
    scale = rng.uniform(*framing.scale_range)
    if kind == "two_faces":  # always two small half-body figures: a close-up has no room for a second face
        radius = size * 0.105 * scale
        centre_y = size * rng.uniform(0.38, 0.46)
        talker = _figure_track(rng, num_frames, fps, size * rng.uniform(0.24, 0.3), centre_y, radius, mouth)
        listener = _figure_track(rng, num_frames, fps, size * rng.uniform(0.7, 0.76), centre_y, radius,
                                 np.zeros(num_frames))
        tracks = [talker, listener]
    else:
        radius = size * framing.head_radius * scale
        centre_x = size * (0.5 + rng.uniform(-framing.centre_x_jitter, framing.centre_x_jitter))
        centre_y = size * (framing.centre_y + rng.uniform(-framing.centre_y_jitter, framing.centre_y_jitter))
        tracks = [_figure_track(rng, num_frames, fps, centre_x, centre_y, radius, mouth)]

    write_video(video_path, _render(backdrop, tracks, num_frames), fps, audio=audio, sample_rate=SAMPLE_RATE,
                crf=ENCODER_CRF, preset=ENCODER_PRESET)
    faces = [{"x": round(float(t.head_x.mean()) / size, 6), "y": round(float(t.head_y.mean()) / size, 6)}
             for t in tracks]
    return {
        "format_version": GROUND_TRUTH_VERSION,
        "clip_id": clip_id,
        "kind": kind,
        "seed": seed,
        "index": index,
        "text": text,
        "words": words,
        "voice": voice,
        "rate_wpm": rate,
        "fps": fps,
        "num_frames": num_frames,
        "duration": round(duration, 6),
        "width": size,
        "height": size,
        "audio": {"sample_rate": SAMPLE_RATE, "speech_start": round(lead_in, 4) if speech is not None else None,
                  "speech_end": round(speech_end, 4) if speech is not None else None},
        "mouth_open": [round(float(m), 4) for m in mouth],
        "face": faces[0],
        "faces": faces,
        # The talker's mouth centre (normalised, mean over the clip) and head half-width (pixels): where a
        # mouth-weighted loss or a mouth crop looks.
        "mouth": {"x": faces[0]["x"], "y": round((float(tracks[0].head_y.mean()) + MOUTH_OFFSET * radius) / size, 6)},
        "head_radius": round(float(radius), 3),
    }


def make_portrait(path: str | os.PathLike, seed: int = 0, size: int = 256, framing: str = "half_body") -> Path:
    """Write a PNG of one new figure (mouth closed, eyes open), drawn from a stream no dataset clip uses.

    The demo's inference input: a face the model did not train on.
    """
    if size < 64:
        raise UserError(f"portrait size must be >= 64 pixels, got {size}")
    if framing not in FRAMINGS:
        raise UserError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    layout = FRAMINGS[framing]
    rng = _clip_rng(seed, 0, "portrait")
    image = background(size, size, rng)
    radius = size * layout.head_radius * rng.uniform(0.9, 1.1)
    jitter = min(layout.centre_x_jitter, 0.05)
    pose = FigurePose(head_x=size * (0.5 + rng.uniform(-jitter, jitter)), head_y=size * layout.centre_y,
                      head_radius=radius)
    draw_figure(image, FigureStyle.random(rng), pose)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise UserError(f"could not write {path}")
    return path
