"""Scraper pieces without a server: row validation, error classification, speech onset, ASR back-ends."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_gen.errors import UserError
from avatar_gen.scraper.download import ErrorKind, classify_download_error
from avatar_gen.scraper.filters import language_filter, speech_onset, speech_start_filter
from avatar_gen.scraper.rows import AvspeechRow, RowRejection, local_clip_id, parse_row, read_avspeech_csv
from avatar_gen.scraper.transcribe import Segment, Word, clip_segments

SR = 16_000


def _reason(fields: list[str]) -> str:
    result = parse_row(7, fields)
    assert isinstance(result, RowRejection), result
    assert result.row == 7
    return result.reason


def test_valid_row_gives_segment_and_clip_id():
    row = parse_row(3, ["AvWWVOgaMlk", "90.000000", "93.566667", "0.586979", "0.260417"])
    assert isinstance(row, AvspeechRow)
    assert row.clip_id == "AvWWVOgaMlk_90000_93567"
    assert row.duration == pytest.approx(3.566667)
    assert row.source() == {"type": "avspeech", "row": 3, "youtube_id": "AvWWVOgaMlk", "start": 90.0,
                            "end": 93.566667, "face_x": 0.586979, "face_y": 0.260417}


@pytest.mark.parametrize("fields, expected", [
    (["$(touch x)", "0", "3", "0.5", "0.5"], "invalid YouTube id '$(touch x)'"),
    (["; rm -rf ~", "0", "3", "0.5", "0.5"], "invalid YouTube id '; rm -rf ~'"),
    (["../../etc/p", "0", "3", "0.5", "0.5"], "invalid YouTube id '../../etc/p'"),
    (["abcdefghij", "0", "3", "0.5", "0.5"], "invalid YouTube id 'abcdefghij'"),
    (["abcdefghijk", "nan", "3", "0.5", "0.5"], "start is not a number: 'nan'"),
    (["abcdefghijk", "0", "inf", "0.5", "0.5"], "end is not a number: 'inf'"),
    (["abcdefghijk", "1e400", "1e401", "0.5", "0.5"], "start is not a finite number: '1e400'"),
    (["abcdefghijk", "99999999999", "100000000000", "0.5", "0.5"], "start 1e+11 s is beyond any video's length"),
    (["abcdefghijk", "1_000", "1_003", "0.5", "0.5"], "start is not a number: '1_000'"),
    (["abcdefghijk", "5", "3", "0.5", "0.5"], "end 3 s is not after start 5 s"),
    (["abcdefghijk", "-1", "3", "0.5", "0.5"], "start -1 s is negative"),
    (["abcdefghijk", "0", "60", "0.5", "0.5"], "segment of 60.000 s is longer than the maximum 20 s"),
    (["abcdefghijk", "0", "0.2", "0.5", "0.5"], "segment of 0.200 s is shorter than the minimum 1 s"),
    (["abcdefghijk", "0", "3", "1.5", "0.5"], "face_x 1.5 is outside [0, 1]"),
    (["abcdefghijk", "0", "3", "0.5", "-0.1"], "face_y -0.1 is outside [0, 1]"),
    (["abcdefghijk", "0", "3", "0.5"], "expected 5 columns (youtube_id,start,end,face_x,face_y), got 4"),
    (["abcdefghijk", "0", "3", "0.5", "0.5", "9"], "expected 5 columns (youtube_id,start,end,face_x,face_y), got 6"),
])
def test_bad_rows_are_rejected_with_reason(fields, expected):
    assert _reason(fields).startswith(expected)


def test_read_csv_rejects_bad_bytes_per_row_and_selects_range(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"\xef\xbb\xbfAvWWVOgaMlk,1,3,0.5,0.5\n"
                     b"\xff\xfe\xfa,0,2,0.5,0.5\n"
                     b"\n"
                     b"\"quoted,id\",0,2,0.5,0.5\n"
                     b"BvWWVOgaMlk,1,3,0.5,0.5\n")
    parsed = read_avspeech_csv(path)
    assert isinstance(parsed[0], AvspeechRow) and parsed[0].youtube_id == "AvWWVOgaMlk"
    assert [p.reason for p in parsed[1:4]] == [
        "row is not valid UTF-8 text", "empty row",
        "invalid YouTube id 'quoted,id': need 11 characters of A-Z a-z 0-9 _ -"]
    assert [p.row for p in read_avspeech_csv(path, start_row=3, end_row=5)] == [3, 4]


def test_empty_and_missing_csv_are_user_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"\n  \n")
    with pytest.raises(UserError, match="CSV file is empty"):
        read_avspeech_csv(empty)
    with pytest.raises(UserError, match="CSV file not found"):
        read_avspeech_csv(tmp_path / "nope.csv")


def test_local_clip_ids_are_safe_file_names():
    assert local_clip_id("My clip (1).mp4") == "My_clip_1"
    assert local_clip_id("../../etc.mp4") == "etc"
    assert local_clip_id("$(touch x).mov") == "touch_x"
    assert local_clip_id("....mp4") == ""


@pytest.mark.parametrize("message, kind, reason", [
    ("ERROR: [youtube] abc: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies",
     ErrorKind.BOT_CHECK, None),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Sign in to confirm you're not a bot",
     ErrorKind.BOT_CHECK, None),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found (caused by <HTTPError 404>)",
     ErrorKind.PERMANENT, "video not found (HTTP 404/410)"),
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", ErrorKind.PERMANENT,
     "private video"),
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", ErrorKind.PERMANENT,
     "video removed or unavailable"),
    ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users.",
     ErrorKind.PERMANENT, "age-restricted (needs --cookies)"),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable", ErrorKind.TRANSIENT,
     "[generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable"),
    ("ERROR: [generic] x: Unable to download webpage: <urlopen error timed out> (caused by TransportError())",
     ErrorKind.TRANSIENT, "[generic] x: Unable to download webpage: <urlopen error timed out>"),
    ("ERROR: something nobody has seen before", ErrorKind.PERMANENT, "something nobody has seen before"),
])
def test_download_errors_are_classified(message, kind, reason):
    got_kind, got_reason = classify_download_error(message)
    assert got_kind == kind
    if reason is not None:
        assert got_reason == reason


def _tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_speech_onset_finds_start_of_loud_part():
    rng = np.random.default_rng(0)
    quiet = (1e-4 * rng.standard_normal(int(0.6 * SR))).astype(np.float32)
    onset = speech_onset(np.concatenate([quiet, _tone(1.0)]), SR)
    assert onset == pytest.approx(0.6, abs=0.021)
    assert speech_onset(_tone(1.0), SR) == 0.0  # speech throughout still counts
    assert speech_onset(np.zeros(SR, np.float32), SR) is None
    late = speech_start_filter(np.concatenate([np.zeros(int(1.5 * SR), np.float32), _tone(0.5)]), SR, 1.0)
    assert not late.passed and late.reason == "speech starts at 1.50 s, later than 1 s"


def test_language_filter_decisions():
    assert language_filter(("en", 0.9), "en").passed
    rejected = language_filter(("de", 0.8), "en")
    assert not rejected.passed and rejected.reason == "detected language de (p=0.80), want en"
    assert language_filter(None, "en").details == {"language": "en", "assumed": True}


def test_transcript_times_are_clipped_into_the_clip():
    segments = [Segment(-0.2, 1.4, " hi there ", [Word("hi", -0.2, 0.3, 0.9), Word("there", 0.4, 1.4, 0.8)]),
                Segment(1.2, 3.0, "gone", [Word("gone", 1.2, 3.0, 0.5)]),
                Segment(2.5, 3.0, "after", [Word("after", 2.5, 3.0, 0.5)])]
    clipped = clip_segments(segments, duration=1.25)
    assert [(s.start, s.end, s.text) for s in clipped] == [(0.0, 1.25, "hi there"), (1.2, 1.25, "gone")]
    assert [(w.word, w.start, w.end) for w in clipped[0].words] == [("hi", 0.0, 0.3), ("there", 0.4, 1.25)]


def test_pocketsphinx_transcribes_speech_with_word_times():
    from avatar_gen.audio.tts import synthesize
    from avatar_gen.scraper.transcribe import load_asr

    asr = load_asr("pocketsphinx")
    speech = synthesize("the weather is nice today")
    audio = np.concatenate([np.zeros(SR // 4, np.float32), speech.audio])
    transcription = asr.transcribe(audio)
    duration = len(audio) / SR
    words = [word for segment in transcription.segments for word in segment.words]
    assert transcription.language == "en"
    assert words, "pocketsphinx found no words in clear synthetic speech"
    assert all(0.0 <= w.start <= w.end <= duration and w.word for w in words)
    assert words[0].start >= 0.2  # the quarter second of silence is not a word


def test_tiny_whisper_is_registered_and_detects_a_language(tmp_path):
    from avatar_gen.tiny.whisper import TINY_WHISPER_FILE, write_tiny_whisper
    from avatar_gen.scraper.transcribe import WhisperAsr, load_asr
    from avatar_gen.tiny import TINY_MODEL_WRITERS

    assert TINY_MODEL_WRITERS[TINY_WHISPER_FILE] is write_tiny_whisper
    checkpoint = write_tiny_whisper(tmp_path, seed=0)
    asr = load_asr("whisper", str(checkpoint))
    assert isinstance(asr, WhisperAsr) and asr.model.dims.n_audio_ctx == 1500
    language, probability = asr.detect_language(_tone(1.0))
    assert isinstance(language, str) and len(language) in (2, 3) and 0.0 < probability <= 1.0
    with pytest.raises(UserError, match="Whisper checkpoint not found"):
        load_asr("whisper", str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="unknown Whisper model"):
        load_asr("whisper", "no-such-model")


@pytest.mark.slow
def test_tiny_whisper_transcribes_with_word_timestamps_inside_the_clip(tmp_path):
    """Word timestamps run Whisper's DTW, which numba compiles on first use (~20 s of CPU)."""
    from avatar_gen.audio.tts import synthesize
    from avatar_gen.tiny.whisper import write_tiny_whisper
    from avatar_gen.scraper.transcribe import load_asr

    asr = load_asr("whisper", str(write_tiny_whisper(tmp_path, seed=0)))
    audio = synthesize("hello there").audio
    transcription = asr.transcribe(audio)
    duration = len(audio) / SR
    assert transcription.language  # Whisper detected some language while transcribing
    for segment in transcription.segments:
        assert 0.0 <= segment.start <= segment.end <= duration
        assert all(0.0 <= w.start <= w.end <= duration and 0.0 <= w.probability <= 1.0 for w in segment.words)


@pytest.mark.parametrize("center, face_box, expected", [
    # half-body box: 3 face heights (3 x 0.2 x 360 = 216 px), square, centred on the face point
    ((0.5, 0.5), [0.45, 0.4, 0.1, 0.2], (216, 216, 212, 72)),
    # a face at the top-right corner: the box is shifted back inside the frame, not shrunk
    ((0.98, 0.02), [0.93, 0.0, 0.1, 0.2], (216, 216, 424, 0)),
    # no face detected: the largest square that fits
    ((0.5, 0.5), None, (360, 360, 140, 0)),
])
def test_half_body_crop_stays_inside_the_frame(tmp_path, center, face_box, expected):
    from avatar_gen.scraper.pipeline import ScrapeConfig, Scraper

    config = ScrapeConfig(csv_path=tmp_path / "rows.csv", output_dir=tmp_path / "out",
                          transcripts_file=tmp_path / "t.json", crop="half_body", height=128, width=128)
    crop, scale = Scraper(config)._crop_filter(640, 360, center, face_box)
    width, height, left, top = (int(v) for v in crop.removeprefix("crop=").split(":"))
    assert (width, height, left, top) == expected
    assert left >= 0 and left + width <= 640 and top >= 0 and top + height <= 360
    assert width % 2 == 0 and height % 2 == 0
    assert scale == "scale=128:128:flags=area"
