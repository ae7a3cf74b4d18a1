"""Text-to-speech: espeak-ng offline (with real word timings), gTTS online.

``synthesize(text)`` returns a :class:`Speech`: float32 mono audio at the requested sample rate and a
list of words with start/end times in seconds from the start of the audio.

espeak-ng runs in-process through ctypes on the library and voice data shipped by the
``espeakng-loader`` wheel, so it needs neither a system package nor the network.  It is driven in
synchronous mode: ``espeak_Synth`` calls our callback with blocks of 16-bit samples at 22050 Hz and
events, of which ``espeakEVENT_WORD`` carries the word's position in the text and its start time in
the audio (ms).  libespeak-ng keeps global state and is not thread-safe, so every call into it holds
one process-wide lock.  That state also leaks from one message into the next (the pitch-flutter
phase is a static variable no API resets), and the noise of breathy voices is seeded from the
clock, so the same text would come out a little different each time.  We want the same text to
give the same audio, so each call loads a fresh instance of the library (a private copy of the
.so, made on first use, so that we never unload an instance another module uses), initialises it
with a fixed noise seed, speaks, and unloads it; that costs about 1-2 ms.  Nothing is loaded at
import.

gTTS (Google Translate's speech) needs the network; it gives no word timings, so words are spread
over the voiced span of its audio in proportion to their length (an estimate, marked as such in the
docstring of :func:`synthesize`).
"""

from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import io
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar_gen.errors import UserError, first_line
from avatar_gen.media.audio import SAMPLE_RATE, resample_audio

log = logging.getLogger(__name__)

BACKENDS = ("espeak", "gtts")
DEFAULT_VOICE = "en-us"
ESPEAK_DEFAULT_RATE_WPM = 175  # espeak-ng's own default speaking rate
ESPEAK_MIN_RATE_WPM = 80
ESPEAK_MAX_RATE_WPM = 450
TTS_TEXT_MAX_CHARS = 20_000  # far above a caption; keeps one call from synthesising a book by mistake

# A 10 ms window quieter than this RMS (full scale 1.0) counts as silence when trimming word ends.
SILENCE_RMS = 0.01
SILENCE_WINDOW_SECONDS = 0.010

# Constants of espeak-ng's public API (speak_lib.h, API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAMETER_RATE = 1
_CALLBACK_BUFFER_MS = 200
_ESPEAK_RANDOM_SEED = 20_260_101


@dataclass
class Speech:
    """Synthesised speech.

    audio: float32 mono samples in [-1, 1], shape [samples].
    sample_rate: Hz.
    words: ``[{"word": str, "start": float, "end": float}, ...]`` in seconds from the start of ``audio``,
        in speaking order, with ``start <= end <= next start``.
    backend: ``"espeak"`` or ``"gtts"``.  voice: the voice/language it was spoken with.
    """

    audio: np.ndarray
    sample_rate: int
    words: list[dict[str, Any]] = field(default_factory=list)
    backend: str = "espeak"
    voice: str = DEFAULT_VOICE

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / float(self.sample_rate)


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h."""

    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position of the word in the text
        ("length", ctypes.c_int),  # word length in characters
        ("audio_position", ctypes.c_int),  # ms from the start of this message's audio
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


class _EspeakVoice(ctypes.Structure):
    """``espeak_VOICE`` from speak_lib.h; ``languages`` is a packed list, hence a raw pointer."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_EspeakEvent))


class _EspeakEngine:
    """One loaded and initialised libespeak-ng instance; use through :func:`_fresh_engine`."""

    def __init__(self, library_path: str, data_path: str) -> None:
        self.library = ctypes.CDLL(library_path)
        self._declare_signatures()
        sample_rate = self.library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _CALLBACK_BUFFER_MS,
                                                     data_path.encode("utf-8"), _ESPEAK_INITIALIZE_DONT_EXIT)
        if sample_rate <= 0:
            self._unload()
            raise RuntimeError(f"espeak_Initialize failed (returned {sample_rate}) with data at {data_path}")
        self.sample_rate = int(sample_rate)
        # espeak seeds its noise generator (breathy voice variants) from the clock; fix it, so that the
        # same text gives the same samples.  Older libraries without the call have no such noise.
        if hasattr(self.library, "espeak_ng_SetRandSeed"):
            self.library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            self.library.espeak_ng_SetRandSeed.restype = None
            self.library.espeak_ng_SetRandSeed(_ESPEAK_RANDOM_SEED)
        # ctypes must keep the callback object alive as long as the library may call it.
        self._callback = _SynthCallback(self._on_synth)
        self.library.espeak_SetSynthCallback(self._callback)
        self._chunks: list[bytes] = []
        self._word_events: list[tuple[int, int, int]] = []

    def close(self) -> None:
        """Free espeak's memory and unload the library, so the next load starts from clean state."""
        self.library.espeak_Terminate()
        self._unload()

    def _unload(self) -> None:
        _ctypes.dlclose(self.library._handle)

    def _declare_signatures(self) -> None:
        lib = self.library
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))

    def _on_synth(self, samples, num_samples, events) -> int:
        if num_samples > 0 and samples:
            self._chunks.append(ctypes.string_at(samples, num_samples * 2))
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_WORD:
                self._word_events.append((event.text_position, event.length, event.audio_position))
            index += 1
        return 0  # 0 = go on synthesising

    def set_voice(self, voice: str) -> None:
        """Select ``voice``: a voice file name, a voice name, or a language code such as ``en-gb``,
        optionally with a variant (``en-gb+f3``).  espeak only looks up the first two itself."""
        for candidate in [voice, *self._voices_for_language(voice)]:
            if self.library.espeak_SetVoiceByName(candidate.encode("utf-8")) == _EE_OK:
                return
        raise UserError(f"unknown espeak voice {voice!r}: see avatar_gen.audio.tts.list_voices() "
                        "for the names (e.g. 'en-us', 'en-gb', 'de', 'en-us+f3')")

    def _voices_for_language(self, voice: str) -> list[str]:
        """Identifiers (with ``voice``'s variant) of the voices speaking the language code ``voice``,
        best match first (voices whose main language it is before those that merely list it)."""
        base, plus, variant = voice.partition("+")
        language = base.lower()
        main, listed = [], []
        for entry in self.list_voices():
            languages = [code.lower() for code in entry["languages"]]
            if languages and languages[0] == language:
                main.append(entry["identifier"] + plus + variant)
            elif language in languages:
                listed.append(entry["identifier"] + plus + variant)
        return main + listed

    def synthesize(self, text: str, voice: str, rate_wpm: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Audio int16 [samples] at ``self.sample_rate`` and word events (text_position, length, ms)."""
        self.set_voice(voice)
        self.library.espeak_SetParameter(_PARAMETER_RATE, int(rate_wpm), 0)
        self._chunks, self._word_events = [], []
        encoded = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        status = self.library.espeak_Synth(buffer, len(encoded), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        self.library.espeak_Synchronize()
        audio = np.frombuffer(b"".join(self._chunks), dtype="<i2").copy()
        events = self._word_events
        self._chunks, self._word_events = [], []
        return audio, events

    def list_voices(self) -> list[dict[str, Any]]:
        voices = []
        array = self.library.espeak_ListVoices(None)
        index = 0
        while array[index]:
            voice = array[index].contents
            voices.append({
                "name": (voice.name or b"").decode("utf-8", "replace"),
                "identifier": (voice.identifier or b"").decode("utf-8", "replace"),
                "languages": _unpack_languages(voice.languages),
                "gender": {1: "male", 2: "female"}.get(voice.gender, "unspecified"),
            })
            index += 1
        return voices


def _unpack_languages(address: int | None) -> list[str]:
    """espeak packs a voice's languages as (priority byte, NUL-terminated name) pairs ended by a 0 byte."""
    languages: list[str] = []
    if not address:
        return languages
    offset = 0
    while ctypes.c_ubyte.from_address(address + offset).value != 0:
        name = ctypes.string_at(address + offset + 1)
        languages.append(name.decode("utf-8", "replace"))
        offset += 1 + len(name) + 1
    return languages


_ESPEAK_LOCK = threading.Lock()
_private_library_path: str | None = None


def _espeak_library_path() -> str:
    """Our private copy of the wheel's libespeak-ng (made once per process, removed at exit).

    dlopen shares one instance per file, so unloading the wheel's own file could pull the library
    out from under another module; a copy only we load can be unloaded and reloaded freely.
    """
    global _private_library_path
    if _private_library_path is None:
        folder = tempfile.mkdtemp(prefix="avatar-gen-espeak-")
        atexit.register(_remove_if_owner, folder, os.getpid())
        source = Path(_espeakng_loader().get_library_path())
        _private_library_path = str(shutil.copy2(source, Path(folder) / source.name))
    return _private_library_path


def _remove_if_owner(folder: str, owner_pid: int) -> None:
    """Remove ``folder`` at exit, but not from a forked child: the parent may still be using it."""
    if os.getpid() == owner_pid:
        shutil.rmtree(folder, ignore_errors=True)


def _espeakng_loader():
    try:
        import espeakng_loader
    except ImportError:
        raise UserError("the espeak backend needs the `espeakng-loader` package: pip install espeakng-loader") from None
    return espeakng_loader


@contextlib.contextmanager
def _fresh_engine() -> Iterator[_EspeakEngine]:
    """A freshly loaded espeak instance, held under the process-wide lock and unloaded afterwards."""
    with _ESPEAK_LOCK:
        engine = _EspeakEngine(_espeak_library_path(), _espeakng_loader().get_data_path())
        try:
            yield engine
        finally:
            engine.close()


def list_voices(backend: str = "espeak") -> list[dict[str, Any]]:
    """Voices a back-end offers.

    espeak: ``[{"name", "identifier", "languages": [...], "gender"}]``; pass a language code
    (``"en-us"``), a name or an identifier as ``voice``, optionally with a variant (``"en-us+f3"``).
    gtts: ``[{"name": code, "identifier": code, "languages": [code]}]`` (language codes).
    """
    if backend == "espeak":
        with _fresh_engine() as engine:
            return engine.list_voices()
    if backend == "gtts":
        from gtts.lang import tts_langs

        return [{"name": name, "identifier": code, "languages": [code], "gender": "unspecified"}
                for code, name in sorted(tts_langs().items())]
    raise UserError(f"unknown TTS backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def synthesize(text: str, backend: str = "espeak", voice: str = DEFAULT_VOICE, sample_rate: int = SAMPLE_RATE,
               rate_wpm: int | None = None) -> Speech:
    """Speak ``text``; return float32 mono audio at ``sample_rate`` Hz with per-word timings.

    backend: ``"espeak"`` (offline, word times from the synthesiser) or ``"gtts"`` (needs the
        network; word times estimated by spreading words over the voiced span by length).
    voice: espeak voice (``"en-us"``, ``"en-gb"``, ``"en-us+f3"``, see :func:`list_voices`) or, for gTTS,
        a language code (``"en"``, ``"en-us"``, ``"en-gb"``, ``"fr"``).
    rate_wpm: speaking rate in words per minute (espeak only; 80..450, default 175).

    Raises UserError for empty text, an unknown back-end or voice, a bad rate, or gTTS without network.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError("text to speak is empty")
    text = " ".join(text.split())  # newlines/tabs mean nothing to a speaker, and positions stay simple
    if len(text) > TTS_TEXT_MAX_CHARS:
        raise UserError(f"text to speak is {len(text)} characters long; the limit is {TTS_TEXT_MAX_CHARS}")
    if sample_rate < 8000:
        raise UserError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    if backend == "espeak":
        return _synthesize_espeak(text, voice, sample_rate, rate_wpm)
    if backend == "gtts":
        if rate_wpm is not None:
            raise UserError("rate_wpm is only supported by the espeak backend")
        return _synthesize_gtts(text, voice, sample_rate)
    raise UserError(f"unknown TTS backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _synthesize_espeak(text: str, voice: str, sample_rate: int, rate_wpm: int | None) -> Speech:
    rate = ESPEAK_DEFAULT_RATE_WPM if rate_wpm is None else int(rate_wpm)
    if not ESPEAK_MIN_RATE_WPM <= rate <= ESPEAK_MAX_RATE_WPM:
        raise UserError(f"rate_wpm must be within {ESPEAK_MIN_RATE_WPM}..{ESPEAK_MAX_RATE_WPM}, got {rate}")
    if not voice or "\0" in voice:
        raise UserError(f"unknown espeak voice {voice!r}: see avatar_gen.audio.tts.list_voices()")
    with _fresh_engine() as engine:
        samples, events = engine.synthesize(text, voice, rate)
        native_rate = engine.sample_rate
    audio = resample_audio(samples.astype(np.float32) / 32768.0, native_rate, sample_rate)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    words = _espeak_words(text, events, audio, sample_rate)
    return Speech(audio=audio, sample_rate=sample_rate, words=words, backend="espeak", voice=voice)


_WORD_PUNCTUATION = ".,;:!?\"'()[]{}“”‘’—–-"


def _text_words(text: str) -> list[tuple[str, int, int]]:
    """The spoken words of ``text`` as (word, first char, end char): whitespace-separated tokens with
    surrounding punctuation stripped; tokens that are only punctuation are not words."""
    words = []
    for match in re.finditer(r"\S+", text):
        word = match.group().strip(_WORD_PUNCTUATION)
        if word:
            words.append((word, match.start(), match.end()))
    return words


def _espeak_words(text: str, events: list[tuple[int, int, int]], audio: np.ndarray,
                  sample_rate: int) -> list[dict[str, Any]]:
    """One ``{"word", "start", "end"}`` per word of ``text``, timed by espeak's word events.

    espeak reports a word event per spoken word, but it speaks some pairs as one ("of the") and
    reports only the first: a word without its own event shares the time up to the next event
    with the words before it, in proportion to their lengths.  Silence at either side of a word's
    span is trimmed (a word event comes before the pause that precedes the word), so pauses belong
    to no word.
    """
    duration = len(audio) / sample_rate
    words = _text_words(text)
    if not words:
        return []
    anchors: dict[int, float] = {}
    for position, _length, milliseconds in events:
        char_index = position - 1  # espeak counts characters from 1
        for index, (_word, first, end) in enumerate(words):
            if first <= char_index < end:
                anchors.setdefault(index, min(max(milliseconds / 1000.0, 0.0), duration))
                break
    if not anchors:
        return _spread_words(text, audio, sample_rate)
    starts = _interpolate_starts([len(word) for word, _, _ in words], anchors, _sound_span(audio, sample_rate)[1])
    loud = _loud_windows(audio, sample_rate)
    timed = []
    for index, (word, _first, _end) in enumerate(words):
        limit = starts[index + 1] if index + 1 < len(words) else duration
        start_time = _first_sound_after(loud, starts[index], limit)
        end_time = _last_sound_before(loud, start_time, limit)
        timed.append({"word": word, "start": round(start_time, 4), "end": round(end_time, 4)})
    return timed


def _interpolate_starts(lengths: list[int], anchors: dict[int, float], sound_end: float) -> list[float]:
    """Start times for every word: anchored words keep theirs (made monotonic); the others split the
    gap to the next anchor (or to ``sound_end``) with the anchored word before them by length."""
    count = len(lengths)
    starts = [0.0] * count
    anchored = sorted(anchors)
    if anchored[0] != 0:
        anchors = {0: 0.0, **anchors}
        anchored = [0, *anchored]
    for which, index in enumerate(anchored):
        segment_end_index = anchored[which + 1] if which + 1 < len(anchored) else count
        segment_start = max(anchors[index], starts[index - 1] if index else 0.0)
        segment_stop = anchors[segment_end_index] if segment_end_index < count else max(sound_end, segment_start)
        segment_stop = max(segment_stop, segment_start)
        weights = np.array(lengths[index:segment_end_index], dtype=np.float64)
        offsets = np.concatenate([[0.0], np.cumsum(weights)[:-1]]) / weights.sum()
        for offset_index, offset in enumerate(offsets):
            starts[index + offset_index] = segment_start + offset * (segment_stop - segment_start)
    return starts


def _sound_span(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(start, end) in seconds of the part of ``audio`` louder than silence; (0, duration) if all silent."""
    loud_indices = np.flatnonzero(_loud_windows(audio, sample_rate))
    if loud_indices.size == 0:
        return 0.0, len(audio) / sample_rate
    return loud_indices[0] * SILENCE_WINDOW_SECONDS, (loud_indices[-1] + 1) * SILENCE_WINDOW_SECONDS


def _loud_windows(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Boolean [windows]: whether each SILENCE_WINDOW_SECONDS window is louder than SILENCE_RMS."""
    window = max(1, int(round(SILENCE_WINDOW_SECONDS * sample_rate)))
    count = len(audio) // window
    if count == 0:
        return np.zeros(0, dtype=bool)
    frames = audio[: count * window].reshape(count, window).astype(np.float64)
    return np.sqrt((frames ** 2).mean(axis=1)) > SILENCE_RMS


def _loud_indices_within(loud: np.ndarray, start: float, limit: float) -> tuple[int, np.ndarray]:
    """(first window, indices relative to it) of the loud windows lying wholly inside [start, limit)."""
    first = int(np.ceil(start / SILENCE_WINDOW_SECONDS - 1e-9))
    last = min(int(np.floor(limit / SILENCE_WINDOW_SECONDS + 1e-9)), len(loud))
    return first, np.flatnonzero(loud[first:last]) if last > first else np.zeros(0, dtype=np.int64)


def _first_sound_after(loud: np.ndarray, start: float, limit: float) -> float:
    """Start in seconds of the first loud window in [start, limit); ``start`` when there is none."""
    first, loud_indices = _loud_indices_within(loud, start, limit)
    if loud_indices.size == 0:
        return start
    return float(max(start, (first + loud_indices[0]) * SILENCE_WINDOW_SECONDS))


def _last_sound_before(loud: np.ndarray, start: float, limit: float) -> float:
    """End in seconds of the last loud window in [start, limit); ``limit`` when there is none."""
    first, loud_indices = _loud_indices_within(loud, start, limit)
    if loud_indices.size == 0:
        return limit
    return float(min(limit, max(start, (first + loud_indices[-1] + 1) * SILENCE_WINDOW_SECONDS)))


# gTTS accents: Google picks the accent from the site's top-level domain.
_GTTS_ACCENT_TLD = {"en-us": "com", "en-gb": "co.uk", "en-au": "com.au", "en-in": "co.in", "en-ca": "ca",
                    "fr-ca": "ca", "fr-fr": "fr", "pt-br": "com.br", "pt-pt": "pt", "es-es": "es", "es-mx": "com.mx"}


def _gtts_language(voice: str) -> tuple[str, str]:
    from gtts.lang import tts_langs

    languages = {code.lower(): code for code in tts_langs()}
    key = voice.lower()
    if key in languages:
        return languages[key], "com"
    base = key.split("-")[0]
    if base in languages:
        return languages[base], _GTTS_ACCENT_TLD.get(key, "com")
    raise UserError(f"unknown gTTS language {voice!r}: see avatar_gen.audio.tts.list_voices('gtts')")


def _synthesize_gtts(text: str, voice: str, sample_rate: int) -> Speech:
    try:
        from gtts import gTTS, gTTSError
    except ImportError:
        raise UserError("the gtts backend needs the `gTTS` package: pip install gTTS") from None
    import requests

    language, tld = _gtts_language(voice)
    mp3 = io.BytesIO()
    try:
        gTTS(text, lang=language, tld=tld, lang_check=False).write_to_fp(mp3)
    except (gTTSError, requests.exceptions.RequestException, OSError) as exc:
        raise UserError(f"gTTS needs network access to translate.google.{tld}, which failed ({first_line(exc)}); "
                        "use the offline backend='espeak' instead") from None
    from avatar_gen.media.ffmpeg import run_ffmpeg

    raw = run_ffmpeg(["-f", "mp3", "-i", "pipe:0", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"],
                     input_bytes=mp3.getvalue())
    audio = np.clip(np.frombuffer(raw, dtype="<f4"), -1.0, 1.0).astype(np.float32)
    return Speech(audio=audio, sample_rate=sample_rate, words=_spread_words(text, audio, sample_rate),
                  backend="gtts", voice=voice)


def _spread_words(text: str, audio: np.ndarray, sample_rate: int) -> list[dict[str, Any]]:
    """Estimated word times: the voiced span of ``audio`` divided among the words by character count."""
    words = [word for word, _, _ in _text_words(text)]
    if not words:
        return []
    span_start, span_end = _sound_span(audio, sample_rate)
    weights = np.array([len(word) for word in words], dtype=np.float64)
    edges = span_start + (span_end - span_start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [{"word": word, "start": round(float(edges[i]), 4), "end": round(float(edges[i + 1]), 4)}
            for i, word in enumerate(words)]
