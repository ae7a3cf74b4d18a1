"""What a generation starts from: the portrait (checked, cropped around the face) and the speech (TTS or a file).

Limits a user can hit, each reported as one :class:`~avatar_gen.errors.UserError` line:

- the portrait must be a readable image (PNG, JPEG, WebP, BMP, ... anything Pillow opens) whose shorter side is at
  least :data:`MIN_IMAGE_SIDE` pixels and whose longer side is at most :data:`MAX_IMAGE_SIDE` (read from the header,
  before decoding); smaller targets are fine, larger ones are up-scaled (with a warning);
- text must be non-empty and at most :data:`REQUEST_TEXT_MAX_CHARS` characters (about a minute of speech);
- audio must be readable by libsndfile or ffmpeg (WAV, FLAC, OGG, MP3, M4A, the sound of a video, any sample rate),
  not silent (peak above :data:`SILENCE_PEAK`, -60 dBFS), and between one video frame and
  :data:`MAX_SPEECH_SECONDS` long (the length the header declares is checked before decoding, and decoding stops
  at the limit, so a small file holding hours of audio costs no more memory than a long-enough one).

The numbers live in :mod:`avatar_gen.limits`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from avatar_gen.audio.tts import DEFAULT_VOICE, synthesize
from avatar_gen.errors import UserError
from avatar_gen.limits import MAX_IMAGE_SIDE, MAX_SPEECH_SECONDS, MIN_IMAGE_SIDE, REQUEST_TEXT_MAX_CHARS
from avatar_gen.media.audio import SAMPLE_RATE, read_audio, resample_audio
from avatar_gen.media.frames import fit_frames

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-3  # full scale 1.0: audio whose loudest sample is below -60 dBFS carries no speech
MUX_SAMPLE_RATE = 44_100  # Hz of the AAC track in the output (the encoder always gets its own 16 kHz copy)

ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821 (Pillow is imported lazily)


# ------------------------------------------------------------------------------------------------ portrait

def load_portrait(image: ImageInput) -> np.ndarray:
    """The portrait as uint8 RGB [H, W, 3], EXIF orientation applied.

    ``image``: a file path, a PIL image, or a uint8 array [H, W, 3] (RGB) / [H, W] (grey).
    Raises UserError for a missing, unreadable or non-image file and for an image smaller than ``MIN_IMAGE_SIDE``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise UserError(f"image not found: {path}")
        if not path.is_file():
            raise UserError(f"image is not a file: {path}")
        try:
            with Image.open(path) as opened:
                check_image_size(opened.size, str(path))  # from the header: a huge image is never decoded
                opened.load()
                pixels = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        except UnidentifiedImageError:
            raise UserError(f"not an image file (or an image format Pillow cannot read): {path}") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UserError(f"cannot read image {path}: {exc}") from None
        where = str(path)
    elif isinstance(image, np.ndarray):
        pixels = image
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise UserError(f"image array must be uint8 [H, W, 3] RGB, got {pixels.dtype} {pixels.shape}")
        where = "the image"
    elif isinstance(image, Image.Image):
        pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        where = "the image"
    else:
        raise UserError(f"image must be a file path, a PIL image or a uint8 array, got {type(image).__name__}")
    height, width = pixels.shape[:2]
    check_image_size((width, height), where)
    return np.ascontiguousarray(pixels)


def check_image_size(size: tuple[int, int], where: str) -> None:
    """UserError unless a portrait of ``size`` (width, height) has sides within [MIN_IMAGE_SIDE, MAX_IMAGE_SIDE]."""
    width, height = size
    if min(height, width) < MIN_IMAGE_SIDE:
        raise UserError(f"image {where} is {width}x{height} px; its shorter side must be at least {MIN_IMAGE_SIDE} px")
    if max(height, width) > MAX_IMAGE_SIDE:
        raise UserError(f"image {where} is {width}x{height} px; its longer side may be at most {MAX_IMAGE_SIDE} px")


def face_center(portrait: np.ndarray) -> tuple[float, float] | None:
    """Centre (x, y) in [0, 1] of the largest frontal face in ``portrait`` (OpenCV's Haar cascade), or None."""
    from avatar_gen.evaluation.faces import detect_faces

    boxes = detect_faces(portrait)  # largest first, pixels (x, y, width, height)
    if len(boxes) == 0:
        return None
    x, y, box_width, box_height = boxes[0]
    height, width = portrait.shape[:2]
    return float((x + box_width / 2) / width), float((y + box_height / 2) / height)


def fit_portrait(portrait: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Crop ``portrait`` to the target aspect around the face (else the centre) and resize to ``height`` x ``width``.

    The crop is the largest box of the target's aspect, as the VAE-latents stage crops training clips around the
    AVSpeech face point, so the first frame looks like the frames the model was trained on.
    Returns (uint8 frame [height, width, 3], face centre or None).
    """
    center = face_center(portrait)
    if center is None:
        log.info("no face found in the portrait: cropping around the image centre")
    if min(portrait.shape[0] / height, portrait.shape[1] / width) < 1.0:
        log.warning("the portrait (%dx%d) is smaller than the video (%dx%d): it is up-scaled and will look soft",
                    portrait.shape[1], portrait.shape[0], width, height)
    return fit_frames(portrait, height, width, center=center), center


# ------------------------------------------------------------------------------------------------ speech

@dataclass
class SpeechInput:
    """The speech a video is made for.

    audio_16k: float32 mono [samples] at 16 kHz, for the audio encoder.
    audio_mux: float32 mono [samples] at ``MUX_SAMPLE_RATE``, muxed into the MP4 as AAC.
    duration: seconds (of ``audio_16k``).  words: TTS word timings ``[{word, start, end}]`` (empty for a file).
    source: ``"tts:<backend>:<voice>"`` or the audio file's path.
    """

    audio_16k: np.ndarray
    audio_mux: np.ndarray
    duration: float
    source: str
    text: str | None = None
    words: list[dict[str, Any]] = field(default_factory=list)


def check_text(text: str) -> str:
    """The text with whitespace runs collapsed; UserError when it is empty or longer than ``REQUEST_TEXT_MAX_CHARS``."""
    if not isinstance(text, str):
        raise UserError(f"text must be a string, got {type(text).__name__}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise UserError("text is empty: give the sentence the avatar should speak")
    if len(cleaned) > REQUEST_TEXT_MAX_CHARS:
        raise UserError(f"text is {len(cleaned)} characters long; the limit is {REQUEST_TEXT_MAX_CHARS} "
                        "(split it into several videos)")
    return cleaned


def check_speech_audio(audio_16k: np.ndarray, where: str, fps: float | None = None) -> float:
    """Validate 16 kHz speech; return its duration (s).  UserError when silent, non-finite, too short or too long."""
    if audio_16k.size == 0:
        raise UserError(f"no audio samples in {where}")
    if not np.all(np.isfinite(audio_16k)):
        raise UserError(f"audio in {where} contains NaN or infinite samples")
    peak = float(np.abs(audio_16k).max())
    if peak < SILENCE_PEAK:
        raise UserError(f"audio in {where} is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS): "
                        "nothing to lip-sync to")
    duration = audio_16k.size / SAMPLE_RATE
    if fps is not None and duration < 1.0 / fps:
        raise UserError(f"audio in {where} lasts {duration * 1000:.0f} ms, shorter than one video frame")
    if duration > MAX_SPEECH_SECONDS:
        raise UserError(f"audio in {where} lasts {duration:.1f} s; the limit is {MAX_SPEECH_SECONDS:.0f} s")
    return duration


def load_speech(text: str | None = None, audio: str | os.PathLike | None = None, tts: str = "espeak",
                voice: str = DEFAULT_VOICE, fps: float | None = None) -> SpeechInput:
    """Speech from exactly one of ``text`` (spoken by the ``tts`` back-end with ``voice``) or an ``audio`` file."""
    if (text is None) == (audio is None):
        raise UserError("give either text to speak or an audio file, not both" if text is not None
                        else "give either text to speak or an audio file")
    if text is not None:
        cleaned = check_text(text)
        speech = synthesize(cleaned, backend=tts, voice=voice, sample_rate=MUX_SAMPLE_RATE)
        audio_16k = resample_audio(speech.audio, MUX_SAMPLE_RATE, SAMPLE_RATE)
        duration = check_speech_audio(audio_16k, f"the {tts} speech of the text", fps)
        return SpeechInput(audio_16k=audio_16k, audio_mux=speech.audio, duration=duration,
                           source=f"tts:{tts}:{voice}", text=cleaned, words=speech.words)
    path = Path(audio)
    if not path.exists():
        raise UserError(f"audio file not found: {path}")
    if not path.is_file():
        raise UserError(f"audio is not a file: {path}")
    # MediaError (a UserError) names the file and the reason: unreadable, or longer than the limit.
    audio_16k = read_audio(path, SAMPLE_RATE, max_seconds=MAX_SPEECH_SECONDS)
    duration = check_speech_audio(audio_16k, str(path), fps)
    audio_mux = read_audio(path, MUX_SAMPLE_RATE, max_seconds=MAX_SPEECH_SECONDS)
    return SpeechInput(audio_16k=audio_16k, audio_mux=audio_mux, duration=duration, source=str(path))
