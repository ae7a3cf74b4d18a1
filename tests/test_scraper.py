"""The scraper end to end on a loopback server: kept clips, rejections, resume after SIGKILL, bot check, imports.

Synthetic clips (2-3 s, 256 px, a drawn face and espeak speech) are served by
``avatar_gen.synthetic.serve_directory`` with HTTP Range support; yt-dlp's generic extractor
downloads ``http://127.0.0.1:PORT/<id>.mp4`` sections exactly as it would a YouTube format URL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest

from avatar_gen.scraper import state_path_for
from avatar_gen.synthetic import RangeRequestHandler, generate_dataset, serve_directory

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "video_scraper" / "scrap_video.py"
FPS = 25.0
BOT_MESSAGE = "Sign in to confirm you\u2019re not a bot"
MISSING_ID = "notOnServer"  # well formed, but the server has no such video -> 404


class CountingHandler(RangeRequestHandler):
    """Counts requests; answers ids in ``bot_ids`` with a bot check and ``flaky_ids`` once with a 503."""

    requests: list[str] = []
    bot_ids: set[str] = set()
    flaky_ids: set[str] = set()
    lock = threading.Lock()

    def do_GET(self) -> None:
        if not self._special_answer():
            super().do_GET()

    def do_HEAD(self) -> None:
        if not self._special_answer():
            super().do_HEAD()

    def _special_answer(self) -> bool:
        video_id = Path(self.path.split("?")[0]).stem
        with self.lock:
            self.requests.append(self.path)
            flaky = video_id in self.flaky_ids
            self.flaky_ids.discard(video_id)
        if video_id in self.bot_ids:
            # YouTube shows the message on its page; on a plain HTTP error it is the reason phrase,
            # which yt-dlp puts into its error text ("HTTP Error 403: Sign in to ...").
            body = f"<html><body>{BOT_MESSAGE}</body></html>".encode()
            self.send_response(403, BOT_MESSAGE.replace("\u2019", "'"))
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return True
        if flaky:
            self.send_text(503, "busy, try again\n")
            return True
        return False


def make_handler(bot_ids=(), flaky_ids=()) -> type[CountingHandler]:
    return type("Handler", (CountingHandler,), {"requests": [], "bot_ids": set(bot_ids), "flaky_ids": set(flaky_ids),
                                                "lock": threading.Lock()})


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """id -> SyntheticClip: three talking clips, one with two faces, one silent (2-3 s each)."""
    out = tmp_path_factory.mktemp("scraper_clips")
    generated = generate_dataset(out, num_clips=3, seed=0, size=256, fps=FPS, min_seconds=2.0, max_seconds=3.0,
                                 two_face_clips=1, silent_clips=1)
    return {"folder": out / "clips", "speech": [c for c in generated if c.kind == "speech"],
            "two_faces": next(c for c in generated if c.kind == "two_faces"),
            "silent": next(c for c in generated if c.kind == "silent")}


def _row(clip, start=None, end=None) -> str:
    start = 0.0 if start is None else start
    end = clip.duration if end is None else end
    return f"{clip.clip_id},{start:.6f},{end:.6f},{clip.face_x:.6f},{clip.face_y:.6f}"


def _csv(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def _args(csv_path: Path, root: Path, base_url: str, *extra: str) -> list[str]:
    return ["--csv_path", str(csv_path), "--output_dir", str(root / "raw_videos"),
            "--transcripts_file", str(root / "video_transcripts.json"), "--url_template", base_url + "/{ytid}.mp4",
            "--sleep_min", "0", "--sleep_max", "0", "--retry_backoff", "0.05", "--preview_seconds", "1.5",
            "--preset", "veryfast", *extra]


def _records(root: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in json.loads((root / "video_transcripts.json").read_text())}


def _rejections(root: Path) -> dict[int, tuple[str, str]]:
    state = json.loads(state_path_for(root / "video_transcripts.json").read_text())
    return {entry["row"]: (entry["stage"], entry["reason"]) for entry in state["rejected"]}


def _main(argv: list[str]) -> int:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import scrap_video
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return scrap_video.main(argv)


def _main_csv_lines(clips) -> tuple[list, dict[str, float]]:
    """The acceptance CSV and the clip ids (with durations) it should keep."""
    good, cut, flaky = clips["speech"]
    lines = [
        _row(good),                                         # 0 kept: a whole talking clip
        _row(clips["two_faces"]),                           # 1 two faces
        _row(cut, 0.5, 2.0),                                # 2 kept: a 1.5 s window in the middle of a clip
        _row(clips["silent"]),                              # 3 no speech
        f"{MISSING_ID},0.000000,2.000000,0.5,0.5",          # 4 404
        "$(touch x),0,2,0.5,0.5",                           # 5
        "; rm -rf ~,0,2,0.5,0.5",                           # 6
        "../../etc/p,0,2,0.5,0.5",                          # 7
        "hugeNumber0,1e400,1e401,0.5,0.5",                  # 8
        "hugeNumber1,99999999999,100000000002,0.5,0.5",     # 9
        "nanStartXYZ,nan,2,0.5,0.5",                        # 10
        "missingCol0,0,2,0.5",                              # 11
        "tooManyCols,0,2,0.5,0.5,7",                        # 12
        "faceOutside,0,2,1.5,0.5",                          # 13
        b"\xff\xfe\xfa\x00,0,2,0.5,0.5",                    # 14 not UTF-8
        "",                                                 # 15 empty
        _row(flaky),                                        # 16 kept after one 503 and a retry
    ]
    kept = {f"{good.clip_id}_0_{round(good.duration * 1000)}": good.duration,
            f"{cut.clip_id}_500_2000": 1.5,
            f"{flaky.clip_id}_0_{round(flaky.duration * 1000)}": flaky.duration}
    return lines, kept


EXPECTED_REJECTIONS = {
    1: ("filter:face", "2 faces found, want exactly one"),
    3: ("filter:speech", "no speech in the first 1.50 s"),
    4: ("download", "video not found (HTTP 404/410)"),
    5: ("validate", "invalid YouTube id '$(touch x)': need 11 characters of A-Z a-z 0-9 _ -"),
    6: ("validate", "invalid YouTube id '; rm -rf ~': need 11 characters of A-Z a-z 0-9 _ -"),
    7: ("validate", "invalid YouTube id '../../etc/p': need 11 characters of A-Z a-z 0-9 _ -"),
    8: ("validate", "start is not a finite number: '1e400'"),
    9: ("validate", "start 1e+11 s is beyond any video's length"),
    10: ("validate", "start is not a number: 'nan'"),
    11: ("validate", "expected 5 columns (youtube_id,start,end,face_x,face_y), got 4"),
    12: ("validate", "expected 5 columns (youtube_id,start,end,face_x,face_y), got 6"),
    13: ("validate", "face_x 1.5 is outside [0, 1]"),
    14: ("validate", "row is not valid UTF-8 text"),
    15: ("validate", "empty row"),
}


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference_run(clips, tmp_path_factory):
    """One uninterrupted run over the acceptance CSV (pocketsphinx); reused by the resume test."""
    work = tmp_path_factory.mktemp("scrape_reference")
    csv_lines, kept = _main_csv_lines(clips)
    csv_path = _csv(work / "rows.csv", csv_lines)
    root = work / "data"
    handler = make_handler(flaky_ids=[clips["speech"][2].clip_id])
    before = _files_under(work)
    cwd = os.getcwd()
    os.chdir(work)  # a `$(touch x)` that ran in a shell would create work/x
    try:
        with serve_directory(clips["folder"], handler=handler) as base_url:
            code = _main(_args(csv_path, root, base_url, "--asr", "pocketsphinx"))
            requests_first = len(handler.requests)
            second_code = _main(_args(csv_path, root, base_url, "--asr", "pocketsphinx"))
            requests_second = len(handler.requests) - requests_first
    finally:
        os.chdir(cwd)
    return {"work": work, "root": root, "csv": csv_path, "kept": kept, "code": code, "second_code": second_code,
            "requests_second": requests_second, "files_before": before}


def test_acceptance_csv_keeps_good_clips_and_rejects_the_rest_with_reasons(reference_run, clips):
    root = reference_run["root"]
    assert reference_run["code"] == 0
    records = _records(root)
    assert set(records) == set(reference_run["kept"])
    for clip_id, record in records.items():
        expected_duration = reference_run["kept"][clip_id]
        assert record["video_path"] == f"raw_videos/{clip_id}.mp4"
        assert record["fps"] == FPS and record["language"] == "en"
        # Segment times are not frame-aligned: the cut may land one frame either way.
        assert abs(record["num_frames"] - expected_duration * FPS) <= 1
        assert record["duration"] == pytest.approx(record["num_frames"] / FPS)
        assert record["source"]["type"] == "avspeech" and record["source"]["youtube_id"] == clip_id[:11]
        with av.open(str(root / record["video_path"])) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio[0].codec_context.name == "aac"
            decoded = sum(1 for _ in container.decode(video=0))
        assert decoded == record["num_frames"]
        words = [w for segment in record["transcript"] for w in segment["words"]]
        assert words, f"{clip_id}: no words transcribed"
        assert all(0.0 <= w["start"] <= w["end"] <= record["duration"] for w in words)
        assert all(set(w) == {"word", "start", "end", "probability"} for w in words)

    rejections = _rejections(root)
    assert set(rejections) == set(EXPECTED_REJECTIONS)
    for row, (stage, reason) in EXPECTED_REJECTIONS.items():
        assert rejections[row][0] == stage, (row, rejections[row])
        assert rejections[row][1].startswith(reason), (row, rejections[row])


def test_nothing_is_executed_or_written_outside_the_output(reference_run):
    work = reference_run["work"]
    assert not (work / "x").exists()
    written = _files_under(work) - reference_run["files_before"]
    kept_files = {f"data/raw_videos/{clip_id}.mp4" for clip_id in reference_run["kept"]}
    assert written == kept_files | {"data/video_transcripts.json", "data/video_transcripts.state.json",
                                    "data/.video_transcripts.json.lock", "data/raw_videos/.scraper.lock"}


def test_rerun_skips_finished_and_rejected_rows_without_requests(reference_run):
    assert reference_run["second_code"] == 0
    assert reference_run["requests_second"] == 0
    assert len(json.loads((reference_run["root"] / "video_transcripts.json").read_text())) == 3


def test_sigkill_then_rerun_gives_the_same_records_once(reference_run, clips, tmp_path):
    csv_path = reference_run["csv"]
    root = tmp_path / "data"
    transcripts = root / "video_transcripts.json"
    handler = make_handler(flaky_ids=[clips["speech"][2].clip_id])
    with serve_directory(clips["folder"], handler=handler) as base_url:
        args = _args(csv_path, root, base_url, "--asr", "pocketsphinx", "--workers", "2")
        process = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and process.poll() is None:
                if transcripts.exists() and json.loads(transcripts.read_text()):
                    break
                time.sleep(0.05)
            assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait()
        killed_records = json.loads(transcripts.read_text())  # never half-written
        assert 1 <= len(killed_records) < 3
        assert _main(args) == 0
    assert not list((root / "raw_videos").glob(".tmp-*")) and not list(root.glob(".tmp-*"))
    resumed = json.loads(transcripts.read_text())
    assert len(resumed) == len({r["clip_id"] for r in resumed}) == 3
    reference = _records(reference_run["root"])
    for clip_id, record in _records(root).items():
        differing = {key: (record[key], reference[clip_id][key]) for key in record
                     if record[key] != reference[clip_id][key]}
        assert not differing, f"{clip_id}: {json.dumps(differing)}"
    assert _rejections(root) == _rejections(reference_run["root"])


def test_bot_check_stops_the_run_with_state_saved_and_resumes(clips, tmp_path, capsys):
    good, blocked, after = clips["speech"]
    csv_path = _csv(tmp_path / "rows.csv", [_row(good), _row(blocked), _row(after)])
    root = tmp_path / "data"
    fast = ["--asr", "none", "--no_language_filter", "--no_face_filter"]
    with serve_directory(clips["folder"], handler=make_handler(bot_ids=[blocked.clip_id])) as base_url:
        code = _main(_args(csv_path, root, base_url, *fast))
    message = capsys.readouterr().err
    assert code != 0
    assert "not a bot" in message and "resume from row 1" in message
    assert [r["source"]["row"] for r in _records(root).values()] == [0]
    assert _rejections(root) == {}  # the blocked row is not rejected: it is retried next time
    with serve_directory(clips["folder"], handler=make_handler()) as base_url:
        assert _main(_args(csv_path, root, base_url, *fast)) == 0
    assert sorted(r["source"]["row"] for r in _records(root).values()) == [0, 1, 2]


def test_input_dir_import_gives_the_same_record_layout(reference_run, clips, tmp_path):
    videos = tmp_path / "my videos"
    videos.mkdir()
    shutil.copy(clips["speech"][0].video_path, videos / "Talk (take 1).mp4")
    shutil.copy(clips["silent"].video_path, videos / "quiet.mp4")
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    (videos / "notes.txt").write_text("ignored: not a video")
    root = tmp_path / "data"
    code = _main(["--input_dir", str(videos), "--output_dir", str(root / "raw_videos"),
                  "--transcripts_file", str(root / "video_transcripts.json"), "--asr", "pocketsphinx",
                  "--preview_seconds", "1.5", "--preset", "veryfast", "--crop", "half_body", "--size", "128x128"])
    assert code == 0
    records = _records(root)
    assert list(records) == ["Talk_take_1"]
    assert (records["Talk_take_1"]["width"], records["Talk_take_1"]["height"]) == (128, 128)
    record = records["Talk_take_1"]
    reference = next(iter(_records(reference_run["root"]).values()))
    assert set(record) == set(reference)
    assert record["video_path"] == "raw_videos/Talk_take_1.mp4" and (root / record["video_path"]).is_file()
    assert record["source"] == {"type": "local", "path": str((videos / "Talk (take 1).mp4").resolve())}
    assert record["num_frames"] == round(clips["speech"][0].duration * FPS)
    assert all(0 <= w["start"] <= w["end"] <= record["duration"] for s in record["transcript"] for w in s["words"])
    state = json.loads(state_path_for(root / "video_transcripts.json").read_text())
    reasons = {entry["id"]: (entry["stage"], entry["reason"]) for entry in state["rejected"]}
    assert set(reasons) == {"broken.mp4", "quiet.mp4"}
    assert reasons["broken.mp4"][0] == "validate" and reasons["broken.mp4"][1].startswith("unreadable video")
    assert reasons["quiet.mp4"] == ("filter:speech", "no speech in the first 1.50 s")


def test_whisper_language_filter_rejects_what_the_model_does_not_call_english(clips, tmp_path):
    from avatar_gen.tiny.whisper import write_tiny_whisper

    checkpoint = write_tiny_whisper(tmp_path / "zoo", seed=0)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(clips["speech"][0].video_path, videos / "talk.mp4")
    root = tmp_path / "data"
    code = _main(["--input_dir", str(videos), "--output_dir", str(root / "raw_videos"),
                  "--transcripts_file", str(root / "video_transcripts.json"), "--asr", "whisper",
                  "--asr_model", str(checkpoint), "--preview_seconds", "1.5"])
    assert code == 0
    assert _records(root) == {}
    (entry,) = json.loads(state_path_for(root / "video_transcripts.json").read_text())["rejected"]
    assert entry["stage"] == "filter:language"
    assert entry["reason"].startswith("detected language ") and entry["reason"].endswith("want en")
    assert not entry["reason"].startswith("detected language en ")


def test_short_and_truncated_downloads_are_rejected_by_their_decoded_length(clips, tmp_path):
    good = clips["speech"][0]
    served = tmp_path / "served"
    served.mkdir()
    data = good.video_path.read_bytes()
    # The moov atom is at the front (faststart), so a cut-off file still opens but ends early.
    (served / "truncated00.mp4").write_bytes(data[: len(data) // 2])
    shutil.copy(good.video_path, served / f"{good.clip_id}.mp4")
    csv_path = _csv(tmp_path / "rows.csv", [
        _row(good, 0.0, good.duration + 1.0),  # asks for a second the video does not have
        "truncated00,0.000000,2.000000,0.5,0.5",
    ])
    root = tmp_path / "data"
    with serve_directory(served, handler=make_handler()) as base_url:
        assert _main(_args(csv_path, root, base_url, "--asr", "none", "--no_language_filter")) == 0
    assert _records(root) == {}
    rejections = _rejections(root)
    assert rejections[0][0] == "download"
    assert rejections[0][1] == (f"decoded {round(good.duration * FPS) / FPS:.2f} s of the requested "
                                f"{good.duration + 1.0:.2f} s (empty, truncated or corrupt download)")
    assert rejections[1][0] in ("preview", "download", "normalise")
    assert not list((root / "raw_videos").glob("*.mp4"))


@pytest.mark.parametrize("extra, message", [
    (["--url_template", "http://127.0.0.1:9/video.mp4"], "--url_template must contain {ytid}"),
    (["--size", "511x512"], "height and width must be even"),
    (["--asr", "none"], "the language filter needs an ASR back-end"),
    (["--input_dir", "."], "give exactly one of csv_path and input_dir"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, extra, message):
    csv_path = _csv(tmp_path / "rows.csv", ["AvWWVOgaMlk,1,3,0.5,0.5"])
    argv = ["--csv_path", str(csv_path), "--output_dir", str(tmp_path / "out"),
            "--transcripts_file", str(tmp_path / "t.json"), *extra]
    assert _main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_empty_csv_exits_2(tmp_path, capsys):
    csv_path = _csv(tmp_path / "rows.csv", [])
    assert _main(["--csv_path", str(csv_path), "--output_dir", str(tmp_path / "out"),
                  "--transcripts_file", str(tmp_path / "t.json")]) == 2
    assert "CSV file is empty" in capsys.readouterr().err
