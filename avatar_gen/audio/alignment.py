"""Synthetic speech that lines up with a video's lips: TTS words time-stretched into transcript timings.

``tts_aligned(words, duration)`` synthesises every transcript word on its own, trims the synthesiser's
silence around it, time-stretches it to exactly the word's transcript span and adds it into a silent
buffer at the word's start.  The result has speech where the speaker's mouth moves and silence where it
rests, which plain TTS of the whole sentence (:func:`fit_speech_to_window`) cannot promise.

Time stretching is WSOLA (waveform-similarity overlap-add, Verhelst & Roelands 1993): 20 ms Hann
frames are read at the stretched rate and overlap-added at a fixed 10 ms hop, each read position moved
by up to 5 ms so the new frame continues the waveform of the previous one.  It keeps the pitch (plain
resampling would not), needs only numpy, and has no phase-vocoder "phasiness" on speech.  Words shorter
than two frames are resampled instead.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import get_window

from avatar_gen.media.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

# A 10 ms window quieter than this RMS (full scale 1.0) counts as silence when trimming synthesised words.
TRIM_SILENCE_RMS = 0.01
TRIM_WINDOW_SECONDS = 0.010
WSOLA_FRAME_SECONDS = 0.020
WSOLA_TOLERANCE_SECONDS = 0.005
FADE_SECONDS = 0.005  # fade each placed word in and out: no clicks at its edges
MIN_WORD_SECONDS = 0.02  # transcript words shorter than this are not placed
# Words stretched beyond these factors are counted in the notes: the transcript timing is suspicious.
STRETCH_WARN_RANGE = (0.4, 2.5)


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold: float = TRIM_SILENCE_RMS) -> np.ndarray:
    """``audio`` without its leading and trailing quiet 10 ms windows (empty when all of it is quiet)."""
    window = max(1, int(round(TRIM_WINDOW_SECONDS * sample_rate)))
    count = int(math.ceil(len(audio) / window))
    if count == 0:
        return audio[:0]
    padded = np.pad(audio.astype(np.float64), (0, count * window - len(audio)))
    loud = np.flatnonzero(np.sqrt((padded.reshape(count, window) ** 2).mean(axis=1)) > threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] * window: min(len(audio), (loud[-1] + 1) * window)]


def _resample_to_length(audio: np.ndarray, length: int) -> np.ndarray:
    positions = np.linspace(0.0, len(audio) - 1, length) if len(audio) > 1 else np.zeros(length)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32) if len(audio) else \
        np.zeros(length, dtype=np.float32)


def time_stretch(audio: np.ndarray, length: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` played faster or slower so that it lasts exactly ``length`` samples, pitch kept (WSOLA)."""
    audio = np.asarray(audio, dtype=np.float32)
    if length <= 0:
        return np.zeros(0, dtype=np.float32)
    frame = int(round(WSOLA_FRAME_SECONDS * sample_rate))
    hop = frame // 2
    tolerance = int(round(WSOLA_TOLERANCE_SECONDS * sample_rate))
    if len(audio) < 2 * frame or length < 2 * frame:
        return _resample_to_length(audio, length)
    if len(audio) == length:
        return audio.copy()
    speed = (len(audio) - frame) / max(1, length - frame)  # input samples read per output sample
    window = get_window("hann", frame, fftbins=True).astype(np.float64)
    margin = frame + tolerance
    source = np.pad(audio.astype(np.float64), (margin, margin + frame))
    num_frames = int(math.ceil((length - frame) / hop)) + 1
    output = np.zeros(num_frames * hop + frame, dtype=np.float64)
    coverage = np.zeros_like(output)
    previous = None
    for index in range(num_frames):
        nominal = margin + int(round(index * hop * speed))
        if previous is None:
            chosen = nominal
        else:
            # The frame that would naturally follow the previous one; pick the read position near the
            # nominal one whose waveform matches it best.
            template = source[previous + hop: previous + hop + frame]
            lo = max(0, nominal - tolerance)
            candidates = source[lo: nominal + tolerance + frame]
            scores = np.correlate(candidates, template, mode="valid")
            chosen = lo + int(np.argmax(scores)) if scores.size else nominal
        output[index * hop: index * hop + frame] += window * source[chosen: chosen + frame]
        coverage[index * hop: index * hop + frame] += window
        previous = chosen
    covered = coverage > 1e-3
    output[covered] /= coverage[covered]
    return output[:length].astype(np.float32)


def _fade_edges(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    fade = min(len(audio) // 2, int(round(FADE_SECONDS * sample_rate)))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        audio = audio.copy()
        audio[:fade] *= ramp
        audio[-fade:] *= ramp[::-1]
    return audio


def spoken_form(word: str) -> str:
    """The part of a transcript token worth speaking: stripped of surrounding punctuation and spaces."""
    return re.sub(r"^\W+|\W+$", "", word.strip())


@dataclass
class AlignedSpeech:
    """Speech built by :func:`tts_aligned`.

    audio: float32 [round(duration * sample_rate)]; placed: ``[{"word", "start", "end", "stretch"}]`` for
    the words placed (chunk-relative seconds; stretch = placed length / synthesised length);
    skipped: ``[{"word", "reason"}]``.
    """

    audio: np.ndarray
    sample_rate: int
    placed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        stretches = [word["stretch"] for word in self.placed]
        low, high = STRETCH_WARN_RANGE
        return {
            "words_placed": len(self.placed),
            "words_skipped": self.skipped,
            "stretch_min": round(min(stretches), 3) if stretches else None,
            "stretch_max": round(max(stretches), 3) if stretches else None,
            "words_heavily_stretched": sum(1 for value in stretches if not low <= value <= high),
        }


Synthesizer = Callable[[str], np.ndarray]
"""Text -> float32 mono audio at the sample rate in use."""


def tts_aligned(words: list[dict[str, Any]], duration: float, synthesize_word: Synthesizer,
                sample_rate: int = SAMPLE_RATE) -> AlignedSpeech:
    """Speech of ``words`` placed at their own times in a window of ``duration`` seconds.

    words: ``[{"word", "start", "end"}]`` in seconds relative to the window's start; words that reach
        past either edge are stretched to their full span and then cut at the edge, as in the recording.
    synthesize_word: speaks one word (e.g. ``lambda text: synthesize(text, "espeak", voice).audio``);
        its exceptions propagate, so that a failing TTS back-end is reported, not hidden.
    """
    total = int(round(duration * sample_rate))
    buffer = np.zeros(total, dtype=np.float32)
    result = AlignedSpeech(audio=buffer, sample_rate=sample_rate)
    cache: dict[str, np.ndarray] = {}
    for entry in words:
        text = spoken_form(str(entry.get("word", "")))
        start, end = float(entry["start"]), float(entry["end"])
        if not text:
            result.skipped.append({"word": entry.get("word", ""), "reason": "nothing to speak"})
            continue
        if end - start < MIN_WORD_SECONDS:
            result.skipped.append({"word": text, "reason": f"shorter than {MIN_WORD_SECONDS} s"})
            continue
        if end <= 0 or start >= duration:
            continue  # entirely outside the window
        if text not in cache:
            cache[text] = trim_silence(np.asarray(synthesize_word(text), dtype=np.float32), sample_rate)
        spoken = cache[text]
        if spoken.size == 0:
            result.skipped.append({"word": text, "reason": "the synthesiser produced silence"})
            continue
        first = int(round(start * sample_rate))
        length = int(round(end * sample_rate)) - first
        stretched = _fade_edges(time_stretch(spoken, length, sample_rate), sample_rate)
        lo, hi = max(0, first), min(total, first + length)
        if hi > lo:
            buffer[lo:hi] += stretched[lo - first: hi - first]
        result.placed.append({"word": text, "start": round(start, 4), "end": round(end, 4),
                              "stretch": round(length / spoken.size, 4)})
    np.clip(buffer, -1.0, 1.0, out=buffer)
    return result


def fit_speech_to_window(speech: np.ndarray, duration: float, start: float = 0.0,
                         sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, dict[str, Any]]:
    """Plain TTS in a window of ``duration`` seconds: trim its silence, start it at ``start`` seconds (the
    first transcript word), moved earlier if it would run past the end; speech longer than the whole
    window is sped up (WSOLA) to fill it.  Returns the audio and what was done (for the chunk's record)."""
    total = int(round(duration * sample_rate))
    spoken = trim_silence(np.asarray(speech, dtype=np.float32), sample_rate)
    buffer = np.zeros(total, dtype=np.float32)
    info: dict[str, Any] = {"speech_seconds": round(len(spoken) / sample_rate, 4), "stretch": 1.0,
                            "offset_seconds": 0.0}
    if spoken.size == 0 or total == 0:
        return buffer, info
    if spoken.size > total:
        info["stretch"] = round(total / spoken.size, 4)
        spoken = time_stretch(spoken, total, sample_rate)
    offset = min(max(0, int(round(start * sample_rate))), total - spoken.size)
    buffer[offset: offset + spoken.size] = spoken
    info["offset_seconds"] = round(offset / sample_rate, 4)
    return buffer, info
