"""Synthetic talking-face clips (mouth follows speech loudness, faces a Haar cascade finds, AVSpeech CSV)
and the loopback HTTP server with Range support."""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import logging
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_gen.errors import UserError
from avatar_gen.media import extract_audio, probe_video, read_frames, rms_envelope
from avatar_gen.synthetic import clip_id_for, generate_dataset, load_ground_truth, make_portrait
from avatar_gen.synthetic.__main__ import main as synthetic_main
from avatar_gen.synthetic.server import RangeRequestHandler, parse_range, RangeNotSatisfiable, serve_directory

AVSPEECH_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
HAAR_FRONTAL_FACE = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
SAMPLED_FRAMES = 10


def _count_faces(cascade: cv2.CascadeClassifier, frame_rgb: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    return np.asarray(faces).reshape(-1, 4)


def _by_kind(clips, kind):
    return [clip for clip in clips if clip.kind == kind]


# ----- the generated dataset -----

def test_dataset_has_the_requested_clips(synthetic_dataset):
    out_dir, clips = synthetic_dataset
    assert [clip.kind for clip in clips] == ["speech"] * 4 + ["two_faces", "silent"]
    assert [clip.clip_id for clip in clips] == [clip_id_for(0, index) for index in range(6)]
    for clip in clips:
        assert clip.video_path == out_dir.resolve() / "clips" / f"{clip.clip_id}.mp4"
        assert clip.ground_truth_path == out_dir.resolve() / "ground_truth" / f"{clip.clip_id}.json"


def test_mouth_opening_follows_the_decoded_speech_loudness(synthetic_dataset):
    _, clips = synthetic_dataset
    correlations = {}
    for clip in clips:
        truth = load_ground_truth(clip.ground_truth_path)
        mouth = np.asarray(truth["mouth_open"])
        audio = extract_audio(clip.video_path, 16000)  # AAC-decoded, as any later stage hears it
        envelope = rms_envelope(audio, 16000, clip.fps, clip.num_frames)
        assert mouth.shape == (clip.num_frames,)
        assert mouth.min() >= 0.0 and mouth.max() <= 1.0
        if clip.kind == "silent":
            assert mouth.max() == 0.0 and truth["words"] == [] and truth["text"] == ""
            assert envelope.max() < 1e-3
            continue
        # Opens fully, and is open while words are spoken, closed between them.
        assert mouth.max() == 1.0
        frame_times = np.arange(clip.num_frames) / clip.fps
        in_word = np.zeros(clip.num_frames, dtype=bool)
        for word in truth["words"]:
            in_word |= (frame_times >= word["start"]) & (frame_times < word["end"])
        assert mouth[in_word].mean() > 3 * mouth[~in_word].mean()
        correlations[clip.clip_id] = float(np.corrcoef(mouth, envelope)[0, 1])
    logging.getLogger(__name__).info("mouth/loudness correlations: %s", correlations)
    assert len(correlations) == 5
    assert min(correlations.values()) >= 0.8, correlations


def test_mouth_box_of_each_clip_holds_its_moving_mouth(synthetic_dataset):
    """Each clip's mouth box (what a mouth-weighted training loss weighs) is the ground truth's, and the pixels that
    change between the most open and the most closed mouth lie inside it (per pixel, >= 5x more than outside)."""
    from avatar_gen.latents.regions import read_mouth_box
    from avatar_gen.synthetic.dataset import MOUTH_BOXES_DIR, truth_mouth_box

    out_dir, clips = synthetic_dataset
    for clip in clips:
        truth = load_ground_truth(clip.ground_truth_path)
        box = read_mouth_box(out_dir / MOUTH_BOXES_DIR / f"{clip.clip_id}.json")
        assert box.box == pytest.approx(truth_mouth_box(truth).box, abs=1e-6)
        assert (box.width, box.height) == (truth["width"], truth["height"])
        opening = np.asarray(truth["mouth_open"])
        if clip.kind == "silent":
            continue
        frames = read_frames(clip.video_path).astype(np.float32)
        change = np.abs(frames[opening.argmax()] - frames[opening.argmin()]).mean(axis=-1)
        inside = box.cells(*change.shape)
        assert change[inside].mean() >= 5 * change[~inside].mean(), clip.clip_id


def test_video_has_expected_frames_fps_size_and_audio(synthetic_dataset):
    _, clips = synthetic_dataset
    for clip in clips:
        truth = load_ground_truth(clip.ground_truth_path)
        info = probe_video(clip.video_path)
        assert (info.width, info.height) == (256, 256)
        assert info.fps == pytest.approx(25.0)
        assert info.num_frames == truth["num_frames"] == clip.num_frames
        assert clip.duration == pytest.approx(clip.num_frames / 25.0)
        assert 3.0 - 1e-6 <= clip.duration <= 8.0 + 1e-6
        assert info.has_audio and info.audio_sample_rate == 16000
        assert info.audio_duration == pytest.approx(clip.duration, abs=0.05)


def test_ground_truth_words_are_timed_inside_the_clip(synthetic_dataset):
    _, clips = synthetic_dataset
    for clip in _by_kind(clips, "speech") + _by_kind(clips, "two_faces"):
        truth = load_ground_truth(clip.ground_truth_path)
        assert set(truth) >= {"clip_id", "text", "words", "fps", "num_frames", "duration", "mouth_open", "face",
                              "kind", "seed"}
        words = truth["words"]
        assert [w["word"] for w in words] == [t.strip(",.") for t in truth["text"].split()]
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        assert all(0.0 <= w["start"] <= w["end"] <= truth["duration"] for w in words)
        # Speech starts near the clip start, as AVSpeech segments do.
        assert starts[0] < 0.5


def test_avspeech_csv_rows(synthetic_dataset):
    out_dir, clips = synthetic_dataset
    text = (out_dir / "avspeech.csv").read_text()
    rows = list(csv.reader(text.splitlines()))
    assert len(rows) == len(clips)
    for row, clip in zip(rows, clips):
        assert len(row) == 5
        youtube_id, start, end, face_x, face_y = row[0], *map(float, row[1:])
        assert AVSPEECH_ID.match(youtube_id) and youtube_id == clip.clip_id
        assert start == 0.0 and end == pytest.approx(clip.duration, abs=1e-6)
        assert 0.0 <= face_x <= 1.0 and 0.0 <= face_y <= 1.0
    assert len({row[0] for row in rows}) == len(rows)
    assert not text.lower().startswith("youtube")  # no header row


def test_haar_cascade_finds_one_face_or_two_in_two_face_clips(synthetic_dataset):
    _, clips = synthetic_dataset
    cascade = cv2.CascadeClassifier(HAAR_FRONTAL_FACE)
    for clip in clips:
        truth = load_ground_truth(clip.ground_truth_path)
        frames = read_frames(clip.video_path)
        picks = np.linspace(0, len(frames) - 1, SAMPLED_FRAMES).astype(int)
        expected = 2 if clip.kind == "two_faces" else 1
        counts, centre_errors = [], []
        for index in picks:
            faces = _count_faces(cascade, frames[index])
            counts.append(len(faces))
            if len(faces) == expected:
                centres = sorted(((x + w / 2) / 256, (y + h / 2) / 256) for x, y, w, h in faces)
                # The talking face (the left one of two) is where the ground truth and CSV say.
                centre_errors.append(np.hypot(centres[0][0] - truth["face"]["x"], centres[0][1] - truth["face"]["y"]))
        hit_rate = np.mean(np.asarray(counts) == expected)
        assert hit_rate >= 0.8, (clip.clip_id, clip.kind, counts)
        assert max(centre_errors) < 0.08, (clip.clip_id, centre_errors)


def test_same_seed_gives_identical_clips_and_another_seed_does_not(synthetic_dataset, tmp_path):
    out_dir, clips = synthetic_dataset
    again = generate_dataset(tmp_path / "again", num_clips=1, seed=0)
    assert again[0].clip_id == clips[0].clip_id
    assert json.loads(again[0].ground_truth_path.read_text()) == json.loads(clips[0].ground_truth_path.read_text())
    assert hashlib.sha256(again[0].video_path.read_bytes()).digest() == \
        hashlib.sha256(clips[0].video_path.read_bytes()).digest()
    other = generate_dataset(tmp_path / "other", num_clips=1, seed=1, min_seconds=3.0, max_seconds=3.5)
    assert other[0].clip_id != clips[0].clip_id and other[0].text != clips[0].text


def test_rerun_keeps_finished_clips_and_overwrite_redoes_them(tmp_path):
    first = generate_dataset(tmp_path, num_clips=1, seed=3, min_seconds=3.0, max_seconds=3.2)
    stamp = first[0].video_path.stat().st_mtime_ns
    (tmp_path / "clips" / ".tmp-leftover-x.mp4").write_bytes(b"partial")  # a killed run's leftover
    kept = generate_dataset(tmp_path, num_clips=1, seed=3, min_seconds=3.0, max_seconds=3.2)
    assert kept == first and first[0].video_path.stat().st_mtime_ns == stamp
    assert not (tmp_path / "clips" / ".tmp-leftover-x.mp4").exists()
    redone = generate_dataset(tmp_path, num_clips=1, seed=3, min_seconds=3.0, max_seconds=3.2, overwrite=True)
    assert redone == first and first[0].video_path.stat().st_mtime_ns != stamp


def test_portrait_is_one_new_face(synthetic_dataset, tmp_path):
    _, clips = synthetic_dataset
    path = make_portrait(tmp_path / "portrait.png", seed=0, size=256)
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert image.shape == (256, 256, 3)
    assert len(_count_faces(cv2.CascadeClassifier(HAAR_FRONTAL_FACE), image)) == 1
    for clip in clips:  # not a frame of any training clip
        first_frame = read_frames(clip.video_path, max_frames=1)[0]
        assert np.abs(first_frame.astype(int) - image.astype(int)).mean() > 10


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        generate_dataset(tmp_path, num_clips=0)
    with pytest.raises(UserError):
        generate_dataset(tmp_path, num_clips=1, min_seconds=5, max_seconds=4)
    with pytest.raises(UserError):
        generate_dataset(tmp_path, num_clips=1, size=63)


def test_cli_writes_a_dataset_and_reports_bad_input(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synthetic_main(["--out", str(out), "--num_clips", "1", "--min_seconds", "3", "--max_seconds", "3",
                           "--size", "128", "--portrait", str(out / "face.png")]) == 0
    assert len((out / "avspeech.csv").read_text().splitlines()) == 1
    assert len(list((out / "clips").glob("*.mp4"))) == 1 and (out / "face.png").is_file()
    assert probe_video(next((out / "clips").glob("*.mp4"))).width == 128
    assert synthetic_main(["--out", str(out), "--num_clips", "0"]) == 2
    assert "error: nothing to generate" in capsys.readouterr().err


# ----- the HTTP server -----

@pytest.fixture()
def served(tmp_path):
    payload = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "abcdefghijk.mp4").write_bytes(payload)
    (tmp_path / "secret.txt").write_text("outside the served folder")
    return tmp_path / "site", payload


def _request(base_url: str, method: str, target: str, headers: dict | None = None):
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, target, headers=headers or {})  # sent as is: no dot-segment clean-up
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_server_answers_byte_ranges_exactly(served):
    folder, payload = served
    with serve_directory(folder) as url:
        status, headers, body = _request(url, "GET", "/abcdefghijk.mp4", {"Range": "bytes=1000-1999"})
        assert status == 206 and body == payload[1000:2000]
        assert headers["content-range"] == f"bytes 1000-1999/{len(payload)}"
        assert headers["content-length"] == "1000" and headers["accept-ranges"] == "bytes"
        status, headers, body = _request(url, "GET", "/abcdefghijk.mp4", {"Range": "bytes=10000-"})
        assert status == 206 and body == payload[10000:]
        status, headers, body = _request(url, "GET", "/abcdefghijk.mp4", {"Range": "bytes=-100"})
        assert status == 206 and body == payload[-100:]
        status, headers, body = _request(url, "GET", "/abcdefghijk.mp4", {"Range": "bytes=10200-99999"})
        assert status == 206 and body == payload[10200:]  # the end is clamped to the file


def test_server_whole_file_head_404_416(served):
    folder, payload = served
    with serve_directory(folder) as url:
        status, headers, body = _request(url, "GET", "/abcdefghijk.mp4")
        assert status == 200 and body == payload and headers["content-type"] == "video/mp4"
        assert headers["accept-ranges"] == "bytes"
        status, headers, body = _request(url, "HEAD", "/abcdefghijk.mp4")
        assert status == 200 and body == b"" and headers["content-length"] == str(len(payload))
        assert _request(url, "GET", "/missing.mp4")[0] == 404
        for bad in (f"bytes={len(payload)}-", "bytes=500-100", "bytes=abc", "items=0-1", "bytes=-0"):
            status, headers, _ = _request(url, "GET", "/abcdefghijk.mp4", {"Range": bad})
            assert status == 416, bad
            assert headers["content-range"] == f"bytes */{len(payload)}"


def test_server_refuses_to_leave_its_folder(served):
    folder, _ = served
    (folder / "escape.mp4").symlink_to(folder.parent / "secret.txt")
    with serve_directory(folder) as url:
        for target in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "//etc/passwd",
                       "/a/../../secret.txt", "/escape.mp4", "/..\\secret.txt"):
            status, _, body = _request(url, "GET", target)
            assert status in (403, 404), target
            assert b"outside" not in body


def test_server_routes_and_handler_overrides(served):
    folder, payload = served

    class BotCheckHandler(RangeRequestHandler):
        """Answers /watch like a video site asking to confirm you are not a bot."""

        def do_GET(self):
            if self.path.startswith("/watch"):
                self.send_text(200, "<html>Sign in to confirm you're not a bot</html>", "text/html; charset=utf-8")
                return
            super().do_GET()

    with serve_directory(folder, routes={"/watch?v=abcdefghijk": "abcdefghijk.mp4", "/clip": "abcdefghijk.mp4"}) \
            as url:
        status, _, body = _request(url, "GET", "/watch?v=abcdefghijk", {"Range": "bytes=0-9"})
        assert status == 206 and body == payload[:10]
        assert _request(url, "GET", "/clip")[2] == payload
        assert _request(url, "GET", "/watch?v=zzzzzzzzzzz")[0] == 404
    with serve_directory(folder, handler=BotCheckHandler) as url:
        status, _, body = _request(url, "GET", "/watch?v=abcdefghijk")
        assert status == 200 and b"not a bot" in body
        assert _request(url, "GET", "/abcdefghijk.mp4")[2] == payload


def test_server_is_quiet_and_leaves_no_thread(served, capfd):
    folder, _ = served
    threads_before = set(threading.enumerate())
    with serve_directory(folder) as url:
        assert url.startswith("http://127.0.0.1:")
        for _ in range(5):
            _request(url, "GET", "/abcdefghijk.mp4", {"Range": "bytes=0-1"})
        _request(url, "GET", "/missing.mp4")
    assert set(threading.enumerate()) <= threads_before
    assert capfd.readouterr().err == ""


def test_server_binds_loopback_only(served):
    folder, _ = served
    with pytest.raises(UserError, match="loopback"), serve_directory(folder, host="0.0.0.0"):
        pass
    with pytest.raises(UserError, match="not found"), serve_directory(folder / "missing"):
        pass


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-0", (0, 0)), ("bytes=5-", (5, 99)), ("bytes=-5", (95, 99)), ("bytes=-500", (0, 99)),
    ("bytes=90-200", (90, 99)), ("bytes=0-1,5-6", None), ("BYTES = 1 - 2", (1, 2)),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=7-3", "bytes=x-1", "bytes=-", "lines=0-1", "bytes=-0"])
def test_parse_range_rejects(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_clip_paths_are_served_as_id_mp4(synthetic_dataset):
    out_dir, clips = synthetic_dataset
    with serve_directory(Path(out_dir) / "clips") as url:
        clip = clips[0]
        data = clip.video_path.read_bytes()
        status, headers, body = _request(url, "GET", f"/{clip.clip_id}.mp4", {"Range": "bytes=0-1023"})
        assert status == 206 and body == data[:1024]
        assert headers["content-range"] == f"bytes 0-1023/{len(data)}"


def test_close_up_framing_fills_the_frame_and_held_out_voices_are_honoured(tmp_path):
    """The toy world's clips: the face fills a 128 px close-up (Haar still finds it), the mouth position in the
    ground truth is on the drawn mouth (the darkest part of the lower face when it is wide open), and only the
    requested voices speak."""
    clips = generate_dataset(tmp_path, num_clips=2, seed=4, size=128, min_seconds=2.0, max_seconds=2.5,
                             framing="close_up", voices=["en-gb+f2"])
    cascade = cv2.CascadeClassifier(HAAR_FRONTAL_FACE)
    for clip in clips:
        truth = load_ground_truth(clip.ground_truth_path)
        assert truth["voice"] == "en-gb+f2" and truth["generation"]["framing"] == "close_up"
        frames = read_frames(clip.video_path)
        widths = [faces[0][2] for faces in (_count_faces(cascade, frame) for frame in frames[::10]) if len(faces)]
        assert len(widths) >= 0.8 * len(frames[::10]) and np.median(widths) >= 0.4 * 128, widths
        widest = frames[int(np.argmax(truth["mouth_open"]))].astype(np.float64).mean(axis=2)
        mouth_x, mouth_y = truth["mouth"]["x"] * 128, truth["mouth"]["y"] * 128
        radius = truth["head_radius"]
        lower_face = widest[int(mouth_y - 0.5 * radius):int(mouth_y + 0.5 * radius),
                            int(mouth_x - 0.5 * radius):int(mouth_x + 0.5 * radius)]
        row, col = np.unravel_index(np.argmin(lower_face), lower_face.shape)
        assert abs(row - 0.5 * radius) < 0.3 * radius and abs(col - 0.5 * radius) < 0.3 * radius
    with pytest.raises(UserError, match="framing"):
        generate_dataset(tmp_path / "bad", num_clips=1, framing="portrait")
