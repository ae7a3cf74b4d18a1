"""Offline TTS through espeak-ng (ctypes on the espeakng-loader wheel) and the gTTS error path."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from avatar_gen.audio.tts import Speech, list_voices, synthesize
from avatar_gen.errors import UserError

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs back home."


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(audio, np.float64) ** 2))) if audio.size else 0.0


@pytest.fixture(scope="module")
def speech() -> Speech:
    return synthesize(SENTENCE)


def test_speech_is_loud_float32_mono_at_requested_rate(speech):
    assert speech.audio.dtype == np.float32 and speech.audio.ndim == 1
    assert speech.sample_rate == 16000 and speech.backend == "espeak" and speech.voice == "en-us"
    assert _rms(speech.audio) > 0.03
    assert 0.2 < np.abs(speech.audio).max() <= 1.0


def test_duration_is_plausible_for_the_speaking_rate(speech):
    word_count = len(SENTENCE.split())
    nominal = word_count / 175 * 60  # espeak's default 175 words per minute
    assert 0.6 * nominal < speech.duration < 2.0 * nominal, (speech.duration, nominal)


def test_every_word_is_timed_in_order(speech):
    expected = [w.strip(",.") for w in SENTENCE.split()]
    assert [w["word"] for w in speech.words] == expected
    previous_start = -1.0
    for index, word in enumerate(speech.words):
        assert previous_start <= word["start"] <= word["end"] <= speech.duration + 1e-6
        if index + 1 < len(speech.words):
            assert word["end"] <= speech.words[index + 1]["start"] + 1e-6
        previous_start = word["start"]
    # Real timings, not an even spread: the first word starts at once, the last ends near the audio's end.
    assert speech.words[0]["start"] < 0.2
    assert speech.words[-1]["end"] > speech.duration - 0.3


def test_word_spans_hold_the_sound_and_the_comma_pause_does_not(speech):
    rate = speech.sample_rate
    for word in speech.words:
        segment = speech.audio[int(word["start"] * rate): int(word["end"] * rate)]
        assert _rms(segment) > 0.02, word
    # The comma after "dog" makes a pause that belongs to no word.
    dog = next(w for w in speech.words if w["word"] == "dog")
    following = speech.words[speech.words.index(dog) + 1]
    assert following["start"] - dog["end"] > 0.05


def test_rate_voice_and_sample_rate_change_the_output(speech):
    fast = synthesize(SENTENCE, rate_wpm=300)
    assert fast.duration < 0.8 * speech.duration
    native = synthesize(SENTENCE, sample_rate=22050)
    assert abs(native.duration - speech.duration) < 0.01
    british = synthesize(SENTENCE, voice="en-gb")  # a language code espeak itself does not resolve
    female = synthesize(SENTENCE, voice="en-us+f3")
    assert british.voice == "en-gb" and len(british.words) == len(speech.words)
    assert not np.array_equal(female.audio[: speech.audio.size], speech.audio[: female.audio.size])


def test_list_voices_has_english():
    voices = list_voices()
    assert len(voices) > 50
    assert any("en-us" in voice["languages"] for voice in voices)


def test_concurrent_calls_are_serialised_and_correct(speech):
    results: list[Speech] = []

    def speak() -> None:
        results.append(synthesize(SENTENCE))

    threads = [threading.Thread(target=speak) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results:
        np.testing.assert_array_equal(result.audio, speech.audio)
        assert result.words == speech.words


def test_same_text_gives_identical_speech_after_other_calls(speech):
    # espeak keeps state between messages; each call starts from a fresh library instance.
    synthesize("Something else first, in another voice.", voice="en-gb+f3", rate_wpm=220)
    again = synthesize(SENTENCE)
    np.testing.assert_array_equal(again.audio, speech.audio)
    assert again.words == speech.words
    # Breathy variants add noise that espeak seeds from the clock (in seconds); we fix the seed.
    first = synthesize(SENTENCE, voice="en-gb+f2").audio
    time.sleep(1.1)
    np.testing.assert_array_equal(synthesize(SENTENCE, voice="en-gb+f2").audio, first)


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_a_user_error(text):
    with pytest.raises(UserError, match="empty"):
        synthesize(text)


def test_unknown_voice_names_list_voices():
    with pytest.raises(UserError, match="list_voices"):
        synthesize("hello", voice="no-such-voice")
    # The engine still works after a failed voice change.
    assert synthesize("hello again").duration > 0.3


def test_bad_backend_and_rate_are_user_errors():
    with pytest.raises(UserError, match="backend"):
        synthesize("hello", backend="festival")
    with pytest.raises(UserError, match="rate_wpm"):
        synthesize("hello", rate_wpm=20)


def test_gtts_without_network_is_a_clear_user_error(monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # Simulate an offline machine, whatever the machine running the test can reach.
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(UserError, match="gTTS needs network access.*espeak"):
        synthesize("hello there", backend="gtts", voice="en")
