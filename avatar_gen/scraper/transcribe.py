"""Speech recognition with word timestamps: Whisper (openai-whisper) or pocketsphinx.

A back-end is built once per process by :func:`load_asr` and shared by every worker thread (each
call holds the back-end's lock: neither library is safe to call from two threads at once).

- Whisper: ``--asr_model`` is a model name (``base``, ``small``, ...; downloaded by openai-whisper
  into its cache on first use) or a checkpoint ``.pt`` file (``{"dims", "model_state_dict"}``).
  Audio goes in as a float32 16 kHz array, so Whisper never calls ffmpeg itself.  It detects the
  language, which the language filter uses.
- pocketsphinx: its US-English acoustic model, language model and dictionary ship inside the pip
  package, so it runs offline.  It only knows English: it reports every clip as English (``language``
  ``en``), which is what the language filter then sees; see docs/scraper.md.

All times are seconds from the start of the audio given, clipped to ``[0, duration]``.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avatar_gen.errors import UserError
from avatar_gen.media.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

ASR_BACKENDS = ("whisper", "pocketsphinx", "none")
DEFAULT_WHISPER_MODEL = "base"
WHISPER_LANGUAGE_WINDOW_SECONDS = 30.0  # Whisper detects the language from one 30 s window
POCKETSPHINX_FRAMES_PER_SECOND = 100  # its default frame rate (-frate 100)
POCKETSPHINX_SEGMENT_PAUSE_SECONDS = 0.5  # a pause this long starts a new transcript segment
# pocketsphinx fillers and sentence markers are not words of the transcript.
_POCKETSPHINX_NON_WORDS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")  # "that(2)" is the word "that"


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcription:
    language: str
    language_probability: float | None
    segments: list[Segment]

    @property
    def num_words(self) -> int:
        return sum(len(segment.words) for segment in self.segments)

    def to_records(self) -> list[dict]:
        """The ``transcript`` field of a record: ``[{start, end, text, words: [{word, start, end, probability}]}]``."""
        return [asdict(segment) for segment in self.segments]


def _clip_time(value: float, duration: float) -> float:
    return round(float(min(max(value, 0.0), duration)), 3)


def clip_segments(segments: list[Segment], duration: float) -> list[Segment]:
    """Clip every time into [0, duration] and drop words that start at or past the end."""
    clipped = []
    for segment in segments:
        words = [Word(word.word, _clip_time(word.start, duration), _clip_time(max(word.end, word.start), duration),
                      round(float(word.probability), 4))
                 for word in segment.words if word.word.strip() and word.start < duration]
        if segment.start >= duration or not (words or segment.text.strip()):
            continue
        start = _clip_time(segment.start, duration)
        clipped.append(Segment(start, max(start, _clip_time(segment.end, duration)), segment.text.strip(), words))
    return clipped


class AsrBackend:
    """A speech recogniser: ``transcribe`` for the record, ``detect_language`` for the language filter."""

    name = "asr"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray) -> Transcription:
        """Transcribe float32 mono 16 kHz ``audio`` [samples]."""
        duration = len(audio) / SAMPLE_RATE
        with self._lock:
            transcription = self._transcribe(np.ascontiguousarray(audio, dtype=np.float32))
        transcription.segments = clip_segments(transcription.segments, duration)
        return transcription

    def detect_language(self, audio: np.ndarray) -> tuple[str, float] | None:
        """(language code, probability) of float32 16 kHz ``audio``; None when the back-end cannot tell."""
        return None

    def _transcribe(self, audio: np.ndarray) -> Transcription:
        raise NotImplementedError


class WhisperAsr(AsrBackend):
    name = "whisper"

    def __init__(self, model_name_or_path: str, device: str = "cpu"):
        super().__init__()
        import whisper

        is_path = model_name_or_path.endswith(".pt") or Path(model_name_or_path).is_file()
        if is_path and not Path(model_name_or_path).is_file():
            raise UserError(f"Whisper checkpoint not found: {model_name_or_path}")
        if not is_path and model_name_or_path not in whisper.available_models():
            raise UserError(f"unknown Whisper model {model_name_or_path!r}: give a checkpoint .pt path or one of "
                            f"{', '.join(whisper.available_models())}")
        try:
            self.model = whisper.load_model(model_name_or_path, device=device)
        except (OSError, RuntimeError) as exc:  # no network for a named model, a damaged file, ...
            raise UserError(f"cannot load Whisper model {model_name_or_path!r}: {exc}") from None
        self.model_name = model_name_or_path
        self.fp16 = device != "cpu"

    def detect_language(self, audio: np.ndarray) -> tuple[str, float] | None:
        import whisper

        if not self.model.is_multilingual:
            return "en", 1.0
        with self._lock:
            window = whisper.pad_or_trim(np.asarray(audio, dtype=np.float32))
            mel = whisper.log_mel_spectrogram(window, self.model.dims.n_mels).to(self.model.device)
            _, probabilities = self.model.detect_language(mel)
        language = max(probabilities, key=probabilities.get)
        return language, float(probabilities[language])

    def _transcribe(self, audio: np.ndarray) -> Transcription:
        result = self.model.transcribe(audio, word_timestamps=True, fp16=self.fp16, verbose=None,
                                       condition_on_previous_text=False)
        segments = [
            Segment(float(segment["start"]), float(segment["end"]), segment["text"],
                    [Word(word["word"].strip(), float(word["start"]), float(word["end"]),
                          float(word.get("probability", 0.0))) for word in segment.get("words", [])])
            for segment in result["segments"]
        ]
        return Transcription(result.get("language") or "", None, segments)


class PocketsphinxAsr(AsrBackend):
    name = "pocketsphinx"

    def __init__(self) -> None:
        super().__init__()
        from pocketsphinx import Decoder

        # The default configuration points at the US-English model inside the package.
        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self.model_name = "en-us"

    def _transcribe(self, audio: np.ndarray) -> Transcription:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        # The feature front end adapts (cepstral mean, noise estimate) across utterances, so a clip's
        # words would depend on which clips came before it; reset it so each clip decodes on its own.
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        words = []
        for piece in self.decoder.seg():
            if _POCKETSPHINX_NON_WORDS.match(piece.word):
                continue
            words.append(Word(_ALTERNATE_PRONUNCIATION.sub("", piece.word),
                              piece.start_frame / POCKETSPHINX_FRAMES_PER_SECOND,
                              (piece.end_frame + 1) / POCKETSPHINX_FRAMES_PER_SECOND, float(piece.prob)))
        return Transcription("en", None, _group_words(words, POCKETSPHINX_SEGMENT_PAUSE_SECONDS))


def _group_words(words: list[Word], pause: float) -> list[Segment]:
    """Split a word list into segments at pauses of at least ``pause`` seconds."""
    segments: list[Segment] = []
    for word in words:
        if segments and word.start - segments[-1].end < pause:
            segments[-1].words.append(word)
            segments[-1].end = word.end
        else:
            segments.append(Segment(word.start, word.end, "", [word]))
    for segment in segments:
        segment.text = " ".join(word.word for word in segment.words)
    return segments


def load_asr(backend: str, model: str | None = None) -> AsrBackend | None:
    """Build the ASR back-end once (``none`` gives None: records get an empty transcript)."""
    if backend == "whisper":
        return WhisperAsr(model or DEFAULT_WHISPER_MODEL)
    if backend == "pocketsphinx":
        if model:
            raise UserError("--asr_model applies to --asr whisper only (pocketsphinx uses its packaged English model)")
        return PocketsphinxAsr()
    if backend == "none":
        return None
    raise UserError(f"unknown --asr {backend!r}: choose one of {', '.join(ASR_BACKENDS)}")
