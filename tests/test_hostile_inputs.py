"""Hostile inputs against every stage: small files that decode into huge ones, and broken files.

What the project promises for each (docs/DESIGN.md, "Bad input"): a stage script prints one ``error:`` line and exits
with 2 (a stage that records bad items records it and goes on), leaves nothing at its output, never runs anything from
a file, and its memory stays bounded: the peak resident memory of the process grows by less than ``MAX_GROWTH_MB``
while it handles the file.

The stage scripts run in one fresh interpreter for the whole module (the ``hostile`` fixture, through
``hostile_files.run_measured``): their heavy imports are paid once, and each check's peak memory (VmHWM) is measured
from what the process held just before it.  A watchdog stops a check at 2 GB, so a regression fails here instead of
exhausting the machine.  Every file is built in a temporary folder in well under a second and a few MB.
Broken checkpoints (cut-short weights, metadata that is not UTF-8, diverged weights) are in test_inference_cli.py.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from hostile_files import (REPO_ROOT, flac_bomb, grey_png, long_static_video, one_error_line, png_video,
                           run_measured)

MAX_GROWTH_MB = 500
HOUR = 3600.0
INFERENCE = "ltx_video/inference.py"
EVALUATE = "ltx_video/evaluate.py"
TRAINING = "ltx_video/training.py"
VAE_STAGE = "preprocessing/save_vae_latents.py"
AUDIO_STAGE = "preprocessing/save_text_latents.py"
SCRAPER = "video_scraper/scrap_video.py"


def _ffmpeg(*args: str, stdout=None) -> None:
    from avatar_gen.media.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True, stdout=stdout)


@dataclass
class Checks:
    """What the measured child runs: ``name -> ("script", path, argv)`` (a stage script's ``main(argv)``) or
    ``name -> ("call", expression)`` (Python; ``load_speech``, ``validate_request`` and ``AUDIO_SOURCE`` in scope)."""

    cases: dict[str, tuple] = field(default_factory=dict)

    def script(self, name: str, script: str, argv: list) -> None:
        self.cases[name] = ("script", script, [str(item) for item in argv])

    def call(self, name: str, expression: str) -> None:
        self.cases[name] = ("call", expression)

    def setup(self) -> str:
        scripts = sorted({case[1] for case in self.cases.values() if case[0] == "script"})
        return f"""
import importlib.util, json
# Everything the checks import, imported before measuring.
import avatar_gen.audio.pipeline, avatar_gen.evaluation, avatar_gen.inference.generator, avatar_gen.latents.encode
import avatar_gen.scraper.pipeline, avatar_gen.training.trainer
from avatar_gen.inference.inputs import load_speech
from avatar_gen.webapp import AUDIO_SOURCE, validate_request
scripts = {{}}
for number, path in enumerate({scripts!r}):
    spec = importlib.util.spec_from_file_location(f"stage_script_{{number}}", {str(REPO_ROOT)!r} + "/" + path)
    scripts[path] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scripts[path])
CASES = []
for name, case in json.loads({json.dumps(self.cases)!r}).items():
    if case[0] == "script":
        CASES.append((name, lambda path=case[1], argv=case[2]: scripts[path].main(argv)))
    else:
        CASES.append((name, lambda expression=case[1]: eval(expression)))
"""


@dataclass
class Hostile:
    results: dict
    paths: dict[str, Path]

    def bounded(self, *names: str) -> None:
        for name in names:
            assert name in self.results, f"{name}: the child stopped before it (see the previous check)"
            outcome = self.results[name]
            assert not outcome.get("exceeded_ceiling"), f"{name}: memory grew past the watchdog's 2 GB"
            assert outcome["peak_growth_mb"] < MAX_GROWTH_MB, \
                f"{name}: peak RSS grew {outcome['peak_growth_mb']:.0f} MB"

    def one_line_exit_2(self, name: str, *fragments: str) -> str:
        self.bounded(name)
        outcome = self.results[name]
        assert outcome.get("returned") == "2", outcome
        line = one_error_line(outcome["stderr"])
        for fragment in fragments:
            assert fragment in line, line
        return line


# ----------------------------------------------------------------------------------------------- building the files

def _audio_bombs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    bombs = {
        "flac_3h": flac_bomb(folder / "three_hours.flac", 3 * HOUR),
        "flac_10h": flac_bomb(folder / "ten_hours.flac", 10 * HOUR),
        # STREAMINFO says "length unknown": only decoding can tell, so it must stop at the limit.
        "flac_unknown_length": flac_bomb(folder / "unknown_length.flac", 3 * HOUR, declared_samples=0),
    }
    # Matroska written to a pipe has no duration in its header, and libsndfile cannot read it: ffmpeg decodes it.
    with open(folder / "streamed.mka", "wb") as streamed:
        _ffmpeg("-i", str(bombs["flac_3h"]), "-c", "copy", "-f", "matroska", "pipe:1", stdout=streamed)
    bombs["mka_unknown_length"] = folder / "streamed.mka"
    assert all(path.stat().st_size < 1_000_000 for path in bombs.values())
    return bombs


def _add_audio_checks(checks: Checks, paths: dict, folder: Path) -> None:
    from avatar_gen.synthetic import make_portrait

    bombs = _audio_bombs(folder / "bombs")
    portrait = make_portrait(folder / "face.png", seed=3, size=96)
    paths.update(bombs, portrait=portrait, audio_output=folder / "out" / "talking.mp4")
    for name, path in bombs.items():
        checks.call(f"api_{name}", f"load_speech(audio={str(path)!r})")
    checks.script("audio_cli", INFERENCE, ["--image", portrait, "--audio", bombs["flac_10h"], "--checkpoint",
                                           folder / "no_checkpoint", "--output", paths["audio_output"]])
    page = dict(image={"path": str(portrait)}, text="", audio={"path": str(bombs["flac_3h"])}, voice="en-us", steps=2,
                guidance=2.0, seed=0)
    checks.call("audio_page", f"validate_request(speech_source=AUDIO_SOURCE, **{page!r})")


def _add_evaluation_checks(checks: Checks, paths: dict, folder: Path) -> None:
    generated, reference, out = folder / "generated", folder / "reference", folder / "eval"
    generated.mkdir(parents=True)
    reference.mkdir()
    png_video(generated / "huge_frames.mkv", grey_png(folder / "huge.png", 10_000, 10_000), fps=25, seconds=0.48)
    long_static_video(generated / "one_hour.mp4", HOUR)
    for name, rate in (("thousand_fps", 1000), ("normal", 25)):
        _ffmpeg("-f", "lavfi", "-i", f"color=gray:s=64x64:r={rate}", "-t", "2", "-c:v", "libx264", "-preset",
                "ultrafast", str(generated / f"{name}.mp4"))
    long_static_video(reference / "normal.mp4", 60)
    shutil.copy(reference / "normal.mp4", reference / "thousand_fps.mp4")
    assert sum(path.stat().st_size for path in generated.iterdir()) < 4_000_000
    paths["evaluation"] = out
    checks.script("evaluate", EVALUATE, ["--generated", generated, "--reference", reference, "--out", out])


BOUNDS = {
    "steps": (["--steps", "1000000000"], "steps must be at most 100"),
    "timesteps": (["--timesteps", *[str(1000 - i) for i in range(101)]], "above the limit of 100 steps"),
    "size": (["--height", "32000", "--width", "32000"], "above the limit of 1280 px"),
    "seed": (["--seed", str(2**70)], "seed must be from 0 to 18446744073709551615"),
    "proc": (["--output", "/proc/x.mp4"], "cannot write /proc/x.mp4: the folder /proc does not take new files"),
    "under_a_file": (["--output", "{blocker}/x.mp4"], "is not a folder"),
}


def _add_bounds_checks(checks: Checks, paths: dict, folder: Path) -> None:
    from avatar_gen.synthetic import make_portrait

    folder.mkdir(parents=True)
    portrait = make_portrait(folder / "face.png", seed=4, size=96)
    blocker = folder / "a_file"
    blocker.write_text("not a folder")
    paths["bounds_output"] = folder / "out" / "talking.mp4"
    for name, (extra, _) in BOUNDS.items():
        argv = ["--image", portrait, "--text", "Hello there.", "--checkpoint", folder / "no_checkpoint",
                "--output", paths["bounds_output"], *[item.format(blocker=blocker) for item in extra]]
        checks.script(f"bounds_{name}", INFERENCE, argv)


class _RunsCode:
    """Unpickling this calls ``os.system``: a file holding it must be refused unread."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _add_training_checks(checks: Checks, paths: dict, folder: Path, tiny_zoo: Path) -> None:
    from avatar_gen.training.toydata import write_toy_chunks

    root = write_toy_chunks(folder / "data", num_clips=6, feature_dim=4)
    latents = root / "vae_latents"
    good = (latents / "toyclip000_0.pt").read_bytes()
    (latents / "toyclip000_0.pt").write_bytes(good[: len(good) // 2])
    (latents / "toyclip001_0.pt").write_bytes(b"")
    torch.save({"features": torch.zeros(2)}, latents / "toyclip002_0.pt")
    marker = folder / "code_ran"
    with open(latents / "toyclip003_0.pt", "wb") as payload:
        pickle.dump({"latents": _RunsCode(marker)}, payload)
    np.save(root / "audio_latents" / "toyclip004_0_ff.npy", np.array([{"rows": 33}], dtype=object), allow_pickle=True)
    paths.update(training_data=root, code_ran=marker, training_run=folder / "run")
    overrides = [f"output_dir={folder / 'run'}", f"model.pretrained={tiny_zoo / 'ltx-video'}",
                 f"data.vae_latents={latents}", f"data.audio_latents={root / 'audio_latents'}", "audio.feature_dim=4",
                 "optimization.max_steps=2"]
    argv = ["--config", REPO_ROOT / "configs" / "train-tiny.yaml"]
    for override in overrides:
        argv += ["--override", override]
    checks.script("train", TRAINING, argv)


def _add_transcripts_checks(checks: Checks, paths: dict, folder: Path, tiny_zoo: Path) -> None:
    data = folder / "data"
    (data / "raw_videos").mkdir(parents=True)
    secret = folder / "secret.mp4"
    for path in (data / "raw_videos" / "clip.mp4", secret):
        _ffmpeg("-f", "lavfi", "-i", "color=gray:s=64x64:r=25", "-f", "lavfi", "-i", "sine=f=300", "-t", "1",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(path))
    depth = 100_000
    (data / "deep.json").write_text("[" * depth + "]" * depth)
    (data / "mistyped.json").write_text(json.dumps([
        {"clip_id": "clip", "video_path": "raw_videos/clip.mp4",
         "transcript": [{"text": "hi", "start": 0.0, "end": 1.0,
                         "words": [{"word": "hi", "start": "soon", "end": 1}]}]}]))
    (data / "escaping.json").write_text(json.dumps([{"clip_id": "clip", "video_path": "../secret.mp4"}]))
    (data / "not_utf8.json").write_bytes(b'[{"clip_id": "caf\xe9"}]')
    chunks = data / "vae_latents"
    chunks.mkdir()
    for key, video in (("clip_0", "raw_videos/clip.mp4"), ("secret_0", "../secret.mp4")):
        (chunks / f"{key}.json").write_text(json.dumps({"clip_id": key[:-2], "chunk": 0, "num_frames": 9, "fps": 25.0,
                                                        "start_time": 0.0, "video_path": video}))
    generated = folder / "generated"
    generated.mkdir()
    shutil.copy(data / "raw_videos" / "clip.mp4", generated / "clip.mp4")
    (folder / "incoming").mkdir()
    paths.update(transcripts_data=data, vae_output=folder / "vae")

    def vae(transcripts):
        return VAE_STAGE, ["--transcripts", transcripts, "--output_dir", folder / "vae",
                           "--pretrained", tiny_zoo / "ltx-video", "--dtype", "fp32"]

    def audio(transcripts, source="tts_aligned"):
        return AUDIO_STAGE, ["--latents_dir", chunks, "--transcripts", transcripts, "--audio_out", data / "audio_wav",
                             "--ff_out", data / "audio_latents", "--audio_source", source,
                             "--encoder", "wav2vec2", "--wav2vec2", tiny_zoo / "wav2vec2"]

    def scraper(transcripts, output_dir=data / "raw_videos"):
        return SCRAPER, ["--input_dir", folder / "incoming", "--output_dir", output_dir,
                         "--transcripts_file", transcripts, "--asr", "none", "--no_language_filter"]

    def heldout(listing):
        return EVALUATE, ["--generated", generated, "--out", folder / "eval", "--heldout", listing]

    for name, (script, argv) in {
        "vae_deep": vae(data / "deep.json"), "vae_mistyped": vae(data / "mistyped.json"),
        "vae_escaping": vae(data / "escaping.json"),
        "audio_deep": audio(data / "deep.json"), "audio_mistyped": audio(data / "mistyped.json"),
        "audio_not_utf8": audio(data / "not_utf8.json"),
        "scraper_deep": scraper(data / "deep.json"), "scraper_mistyped": scraper(data / "mistyped.json"),
        "scraper_outside_root": scraper(data / "new.json", folder / "elsewhere"),
        "heldout_deep": heldout(data / "deep.json"), "heldout_not_utf8": heldout(data / "not_utf8.json"),
        "audio_original_escaping": audio(data / "escaping.json", "original"),
    }.items():
        checks.script(name, script, argv)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_zoo, artifacts_dir) -> Hostile:
    """Builds every file below and runs every stage-script check in one measured child; the figures (peak memory
    growth per check) are left in ``test-artifacts/hostile_inputs.json``."""
    root = tmp_path_factory.mktemp("hostile")
    checks, paths = Checks(), {}
    _add_audio_checks(checks, paths, root / "audio")
    _add_evaluation_checks(checks, paths, root / "evaluation")
    _add_bounds_checks(checks, paths, root / "bounds")
    _add_training_checks(checks, paths, root / "training", tiny_zoo)
    _add_transcripts_checks(checks, paths, root / "transcripts", tiny_zoo)
    results = run_measured(checks.setup(), timeout=600)
    figures = {name: {key: value for key, value in outcome.items() if key != "stderr"}
               for name, outcome in results.items()}
    (artifacts_dir / "hostile_inputs.json").write_text(json.dumps(figures, indent=1) + "\n")
    return Hostile(results, paths)


# ----------------------------------------------------------------------------------------------- audio bombs

def test_audio_bombs_are_refused_with_bounded_memory(hostile):
    """A few hundred KB of FLAC holding 3-10 h of audio (GB once decoded): refused from the header, or decoding stops
    at the limit when the header says nothing, in the Python API, the inference command line and the page's checks."""
    names = ["flac_3h", "flac_10h", "flac_unknown_length", "mka_unknown_length"]
    hostile.bounded(*[f"api_{name}" for name in names], "audio_page")
    for name in names:
        outcome = hostile.results[f"api_{name}"]
        assert outcome.get("raised") == "MediaError" and "the limit is 120 s" in outcome["message"], outcome
    assert "lasts 35999.2 s" in hostile.results["api_flac_10h"]["message"]  # from the header, before decoding
    assert "lasts more than 120 s" in hostile.results["api_flac_unknown_length"]["message"]  # capped decoding
    hostile.one_line_exit_2("audio_cli", "lasts 35999.2 s; the limit is 120 s")
    assert not hostile.paths["audio_output"].parent.exists()
    page = hostile.results["audio_page"]
    assert page.get("raised") == "UserError" and "lasts 10800 s; the limit is 120 s" in page["message"], page

def _process_memory(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key + ":"))


def test_the_web_server_refuses_audio_bombs_and_keeps_answering(webapp_server, hostile, tmp_path, artifacts_dir):
    """Uploads through the page's API (any HTTP client can skip the browser's checks): the declared length is refused
    by the page's check, a hidden one by the generator's capped decoding; the server's memory stays bounded, and it
    goes on answering (and, checked by the session fixture at the end, stops cleanly without a logged traceback)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from avatar_gen.synthetic import make_portrait

    portrait = make_portrait(tmp_path / "face.png", seed=3, size=96)
    webapp_server.wait_until_serving()
    client = Client(webapp_server.url, verbose=False)
    pid = webapp_server.process.pid
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # the server's peak memory starts again from what it holds now
    baseline = _process_memory(pid, "VmRSS")
    for bomb, message in ((hostile.paths["flac_3h"], "the speech file lasts 10800 s; the limit is 120 s"),
                          (hostile.paths["flac_unknown_length"], "lasts more than 120 s; the limit is 120 s")):
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(portrait)), "Upload speech", "", handle_file(str(bomb)), "en-us", 2, 2.0, 0,
                           api_name="/generate")
    growth_mb = (_process_memory(pid, "VmHWM") - baseline) / 2**20
    (artifacts_dir / "hostile_inputs_webapp.json").write_text(json.dumps({"server_peak_growth_mb": growth_mb}) + "\n")
    assert growth_mb < MAX_GROWTH_MB, f"the server's peak memory grew {growth_mb:.0f} MB"
    assert client.predict(handle_file(str(portrait)), api_name="/check_uploaded_portrait") in (None, ())
    assert webapp_server.process.poll() is None



def test_audio_within_the_limit_still_reads_whole(tmp_path):
    from avatar_gen.media.audio import read_audio

    short = flac_bomb(tmp_path / "two_seconds.flac", 2.8)  # 2 blocks of 65535 samples at 48 kHz
    audio = read_audio(short, 16_000, max_seconds=120)
    assert len(audio) == pytest.approx(2 * 65535 / 3, abs=2) and abs(float(audio.mean()) - 3000 / 32768) < 1e-3



# ----------------------------------------------------------------------------------------------- evaluation

def test_evaluation_records_oversized_clips_and_finishes_the_report(hostile):
    """10000x10000 frames, an hour at 256x256, a 1000 fps clip: each is recorded as not evaluated (from its header,
    nothing decoded) and the report is written; a normal clip against a 60 s reference keeps only the frames it
    compares."""
    hostile.bounded("evaluate")
    assert hostile.results["evaluate"]["returned"] == "0", hostile.results["evaluate"]
    out = hostile.paths["evaluation"]
    clips = json.loads((out / "metrics.json").read_text())["clips"]
    expected = {"huge_frames": "10000x10000 px, larger than evaluation takes",
                "one_hour": "90000 frames of 256x256",
                "thousand_fps": "runs at 1000 fps"}
    for clip_id, reason in expected.items():
        assert clips[clip_id]["status"] == "error" and reason in clips[clip_id]["problems"][0], clips[clip_id]
    normal = clips["normal"]["reference"]
    assert (normal["frames_generated"], normal["frames_compared"], normal["frames_reference"]) == (50, 50, 1500)
    assert (out / "report.md").is_file()


def test_a_video_that_hides_its_length_is_cut_at_the_bound(tmp_path, monkeypatch):
    """A header that understates the frame count does not lift the bound: decoding stops at it."""
    from dataclasses import replace

    from avatar_gen.evaluation import pipeline
    from avatar_gen.media import probe_video

    clip = long_static_video(tmp_path / "clip.mp4", 20, size=64, segment_seconds=10)
    lying = replace(probe_video(clip), duration=1.0, num_frames=25)
    monkeypatch.setattr(pipeline, "MAX_PIXELS", 64 * 64 * 100)  # a 100-frame budget for this size
    with pytest.raises(pipeline.ClipTooLarge, match="decodes into more than 100 frames"):
        pipeline.read_clip_frames(clip, lying, 25.0)



# ----------------------------------------------------------------------------------------------- inference bounds

def test_inference_command_line_bounds_cost_nothing(hostile):
    """Values that would allocate gigabytes before the first step, an unusable seed and an unwritable output: one
    line, exit 2, before the model loads, nothing written."""
    for name, (_, fragment) in BOUNDS.items():
        hostile.one_line_exit_2(f"bounds_{name}", fragment)
    assert not hostile.paths["bounds_output"].parent.exists() and not list(Path("/proc").glob(".tmp-*"))


def test_generation_settings_are_bounded_in_the_python_api():
    from avatar_gen.errors import UserError
    from avatar_gen.inference.generator import check_seed, check_video_pixels, resolve_settings
    from avatar_gen.limits import MAX_SEED

    for bad, message in (({"steps": 101}, "at most 100"), ({"height": 1312}, "limit of 1280"),
                         ({"seed": MAX_SEED + 1}, "64 bits"), ({"seed": -1}, "from 0"), ({"seed": "7"}, "whole number"),
                         ({"seed": 1.5}, "whole number")):
        with pytest.raises(UserError, match=message):
            resolve_settings(**bad)
    assert check_seed(MAX_SEED) == MAX_SEED and resolve_settings(steps=100, seed=5.0).seed == 5
    check_video_pixels(3000, 512, 768)
    with pytest.raises(UserError, match="3001 frames of 768x512"):
        check_video_pixels(3001, 512, 768)



# ----------------------------------------------------------------------------------------------- ffmpeg children

KILLED_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from avatar_gen.media.video import write_video

def frames():
    for _ in range(10):
        yield np.zeros((64, 64, 3), np.uint8)
    Path(sys.argv[2]).write_text("writing")
    time.sleep(600)  # killed here, with ffmpeg running and its temporary file open

write_video(sys.argv[1], frames(), 25.0)
"""


def test_a_killed_writer_leaves_no_video_behind(tmp_path):
    """kill -9 during a video write: ffmpeg finishes on its own (its input ends), and the next write to that output
    removes the half-made temporary; another process's temporary stays."""
    import psutil

    from avatar_gen.media.video import write_video

    output, ready = tmp_path / "out.mp4", tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(output), str(ready)], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and writer.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), "the writer did not start"
        children = psutil.Process(writer.pid).children()
        assert [child.name() for child in children if "ffmpeg" in child.name()], children
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        _, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"ffmpeg outlived its parent: {alive}"
    finally:
        if writer.poll() is None:
            writer.kill()
    leftovers = list(tmp_path.glob(".tmp-out-*.mp4"))
    assert len(leftovers) == 1 and not output.exists()
    live_other = tmp_path / f".tmp-out-{os.getpid()}-stillwriting.mp4"  # a live process's file (this test's pid)
    live_other.write_bytes(b"")
    write_video(output, [np.zeros((64, 64, 3), np.uint8)] * 3, 25.0)
    assert output.is_file() and sorted(tmp_path.glob(".tmp-*")) == [live_other]


def test_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """ffmpeg reports ENOSPC in five lines ending with a misleading one; the error is one line that says it."""
    import contextlib

    from avatar_gen.errors import MediaError
    from avatar_gen.media import video
    from avatar_gen.media.ffmpeg import run_ffmpeg

    @contextlib.contextmanager
    def into_a_full_disk(target, suffix=None):
        yield Path("/dev/full")  # every write fails with ENOSPC, as on a full disk

    monkeypatch.setattr(video, "atomic_path", into_a_full_disk)
    with pytest.raises(MediaError) as raised:
        video.write_video(tmp_path / "x.mp4", [np.zeros((64, 64, 3), np.uint8)] * 5, 25.0)
    assert str(raised.value).startswith(f"ffmpeg could not write {tmp_path / 'x.mp4'} (exit ")
    assert str(raised.value).endswith("): no space left on device")
    with pytest.raises(MediaError, match=r"^ffmpeg failed \(exit \d+\): no space left on device$"):
        run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=s=64x64:d=1", "-c:v", "libx264", "-f", "mp4", "/dev/full"])


def test_run_main_prints_one_line_for_a_multi_line_message(capsys):
    from avatar_gen.errors import MediaError
    from avatar_gen.utils.cli import run_main

    def body():
        raise MediaError("ffmpeg said:\nfirst line\n\nsecond line")

    assert run_main(body) == 2
    assert capsys.readouterr().err == "error: ffmpeg said:; first line; second line\n"


# ----------------------------------------------------------------------------------------------- broken data files

@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the payload it then refuses
def test_bad_training_files_stop_before_the_first_step_with_their_names(hostile):
    """Cut-short, empty and key-less latents, a pickle payload and an object array: training names them all in one
    line before any step (it used to crash at the step that drew the file, again at every resume)."""
    from avatar_gen.errors import UserError
    from avatar_gen.training.dataset import scan_chunks

    root = hostile.paths["training_data"]
    with pytest.raises(UserError) as raised:
        scan_chunks(root / "vae_latents", root / "audio_latents", 4)
    message = str(raised.value)
    assert message.startswith("5 unreadable data file(s); delete them") and "\n" not in message
    for expected in ("toyclip000_0.pt is cut short or not a torch file", "toyclip001_0.pt is empty",
                     "toyclip002_0.pt holds no 'latents' tensor (found ['features'])",
                     "toyclip003_0.pt holds Python objects other than tensors and was not loaded",
                     "toyclip004_0_ff.npy holds Python objects, not numbers"):
        assert expected in message, message
    assert "weights_only" not in message
    hostile.one_line_exit_2("train", "5 unreadable data file(s)", "toyclip000_0.pt")
    assert not (hostile.paths["training_run"] / "checkpoints").exists() and not hostile.paths["code_ran"].exists()


TRANSCRIPT_ERRORS = {
    "vae_deep": "is nested too deeply to be read as JSON",
    "vae_mistyped": "record 0 (clip): transcript.0.words.0.start: Input should be a valid number",
    "vae_escaping": "record 0 video_path '../secret.mp4' leads outside the data root",
    "audio_deep": "is nested too deeply",
    "audio_mistyped": "transcript.0.words.0.start",
    "audio_not_utf8": "is not UTF-8 text",
    "scraper_deep": "is nested too deeply",
    "scraper_mistyped": "transcript.0.words.0.start",
    "scraper_outside_root": "must lie inside the data root",
    "heldout_deep": "held-out list",
    "heldout_not_utf8": "is not UTF-8 text",
}


def test_malformed_transcripts_and_escaping_paths_are_one_line_in_every_stage(hostile):
    """A 100 000-deep JSON, mistyped records and a video_path that climbs out of the data root: the VAE, audio and
    scraper stages and evaluate --heldout each stop with one line; the audio stage records a chunk whose path climbs
    out as failed, without reading the file."""
    for name, fragment in TRANSCRIPT_ERRORS.items():
        hostile.one_line_exit_2(name, fragment)
    assert not hostile.paths["vae_output"].exists() or not list(hostile.paths["vae_output"].glob("*.pt"))
    # The original-audio source reads each chunk's video: the one whose path climbs out is recorded as failed, unread.
    hostile.bounded("audio_original_escaping")
    assert hostile.results["audio_original_escaping"]["returned"] == "0", hostile.results["audio_original_escaping"]
    data = hostile.paths["transcripts_data"]
    failed = json.loads((data / "audio_latents" / "secret_0_failed.json").read_text())
    assert "leads outside the data root" in failed["reason"]
    assert not (data / "audio_wav" / "secret_0.wav").exists() and (data / "audio_wav" / "clip_0.wav").is_file()
