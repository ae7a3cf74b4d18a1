"""Web demo without a browser: input checks, result description, output pruning, page layout, CLI errors."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from avatar_gen.errors import UserError
from avatar_gen.inference import DEFAULT_START_SIGMA
from avatar_gen.webapp import (
    AUDIO_SOURCE, MAX_IMAGE_SIDE, WEB_TEXT_MAX_CHARS, MAX_UPLOAD_BYTES, MIN_IMAGE_SIDE, TEXT_SOURCE, PageDefaults,
    build_app, check_portrait, describe_result, prepare_examples, prune_outputs, validate_request,
)


def write_png(path: Path, width: int, height: int) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def portrait(tmp_path) -> Path:
    return write_png(tmp_path / "portrait.png", 96, 128)


def request_values(portrait_path, **changes) -> dict:
    values = dict(image={"path": str(portrait_path), "orig_name": "portrait.png"}, speech_source=TEXT_SOURCE,
                  text="  Hello there.  ", audio=None, voice="en-us", steps=2, guidance=3.0, seed=7)
    values.update(changes)
    return values


def test_valid_request_is_normalised(portrait):
    request = validate_request(**request_values(portrait))
    assert request.image == portrait
    assert request.text == "Hello there."
    assert request.audio is None
    assert (request.steps, request.guidance, request.seed, request.voice) == (2, 3.0, 7, "en-us")
    assert request.guidance_region == "mouth"  # inference's default when the page sends none
    assert request.start_sigma == DEFAULT_START_SIGMA
    # Gradio's slider and number widgets send floats.
    request = validate_request(**request_values(portrait, steps=4.0, seed=12.0))
    assert (request.steps, request.seed) == (4, 12)
    assert isinstance(request.steps, int) and isinstance(request.seed, int)


def test_speech_upload_replaces_the_text(portrait, tmp_path):
    speech = tmp_path / "speech.wav"
    speech.write_bytes(b"RIFF" + bytes(100))
    request = validate_request(**request_values(portrait, speech_source=AUDIO_SOURCE, text="ignored",
                                                audio={"path": str(speech)}))
    assert request.audio == speech and request.text is None
    with pytest.raises(UserError, match="upload a speech recording"):
        validate_request(**request_values(portrait, speech_source=AUDIO_SOURCE))
    notes = tmp_path / "speech.txt"
    notes.write_text("words")
    with pytest.raises(UserError, match="speech file must be one of"):
        validate_request(**request_values(portrait, speech_source=AUDIO_SOURCE, audio={"path": str(notes)}))


@pytest.mark.parametrize("changes, message", [
    ({"text": ""}, "type the text"),
    ({"text": "x" * (WEB_TEXT_MAX_CHARS + 1)}, f"the limit is {WEB_TEXT_MAX_CHARS}"),
    ({"text": 5}, "must be a string"),
    ({"voice": "klingon"}, "unknown voice"),
    ({"steps": 0}, "steps must be"),
    ({"steps": 2.5}, "steps must be"),
    ({"steps": None}, "steps is empty"),
    ({"guidance": 0.5}, "guidance must be"),
    ({"seed": -1}, "seed must be"),
    ({"seed": "abc"}, "seed must be a number"),
    ({"speech_source": "telepathy"}, "speech source"),
    ({"guidance_region": "ears"}, "guidance region must be one of mouth, frame"),
    ({"start_sigma": 0}, r"start_sigma must be a noise level in \(0, 1\]"),
    ({"start_sigma": 1.5}, r"start_sigma must be a noise level in \(0, 1\]"),
    ({"start_sigma": "late"}, "start noise level must be a number"),
    ({"image": None}, "upload a portrait"),
])
def test_bad_values_are_refused_with_a_clear_message(portrait, changes, message):
    with pytest.raises(UserError, match=message):
        validate_request(**request_values(portrait, **changes))


def test_portrait_checks(tmp_path):
    smallest = (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)
    assert check_portrait(write_png(tmp_path / "ok.png", MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)) == smallest
    with pytest.raises(UserError, match="both sides must be at least"):
        check_portrait(write_png(tmp_path / "dot.png", 1, 1))
    with pytest.raises(UserError, match="longest side may be at most"):
        check_portrait(write_png(tmp_path / "wide.png", MAX_IMAGE_SIDE + 1, MIN_IMAGE_SIDE))
    fake = tmp_path / "fake.png"
    fake.write_text("this is text, not a picture")
    with pytest.raises(UserError, match="not an image file"):
        check_portrait(fake)
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (80, 80)).save(gif)
    with pytest.raises(UserError, match="GIF image"):
        check_portrait(gif)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(write_png(tmp_path / "full.png", 200, 200).read_bytes()[:400])
    with pytest.raises(UserError, match="cannot be decoded"):
        check_portrait(truncated)
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(UserError, match="empty file"):
        check_portrait(empty)
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(UserError, match="20.0 MB; the limit is 20 MB"):
        check_portrait(huge)
    with pytest.raises(UserError, match="did not arrive"):
        check_portrait(tmp_path / "missing.png")


def test_describe_result_names_length_size_and_timings():
    result = SimpleNamespace(video_path="v.mp4", duration=2.0, num_frames=50, height=64, width=96, fps=25.0,
                             timings={"speech": 0.25, "audio_features": 0.5, "denoising": 3.0})
    text = describe_result(result)
    assert "2.00 s" in text and "50 frames at 25 fps" in text and "96x64" in text
    assert "speech 0.2 s" in text and "audio features 0.5 s" in text and "denoising 3.0 s" in text
    # where denoising started: pure noise, the portrait with the mouth from noise, or (no face) noise everywhere
    for start, start_region, expected in (
            (1.0, None, "20 denoising steps from pure noise."),
            (0.2, {"region": "mouth", "tokens_per_frame": 12},
             "20 denoising steps from the portrait at noise level 0.2, the mouth from pure noise."),
            (0.2, {"region": "frame", "reason": "no mouth found (no face)"},
             "20 denoising steps from pure noise: the start from the portrait at 0.2 leaves the mouth to noise, and "
             "no mouth found (no face)."),
            (0.5, None, "20 denoising steps from the portrait at noise level 0.5.")):
        started = SimpleNamespace(**vars(result), start_sigma=start, steps_run=20, start_region=start_region)
        assert expected in describe_result(started)


def test_prune_outputs_keeps_the_newest(tmp_path):
    for index in range(5):
        video = tmp_path / f"avatar-{index}.mp4"
        video.write_bytes(b"x")
        os.utime(video, (time.time() + index, time.time() + index))
    (tmp_path / "notes.txt").write_text("not a video: kept")
    prune_outputs(tmp_path, keep=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["avatar-3.mp4", "avatar-4.mp4", "notes.txt"]


def test_page_defaults_are_checked():
    with pytest.raises(UserError, match="steps must be"):
        PageDefaults(steps=0)
    with pytest.raises(UserError, match="unknown voice"):
        PageDefaults(voice="xx")
    with pytest.raises(UserError, match="guidance region"):
        PageDefaults(guidance_region="ears")
    with pytest.raises(UserError, match="start_sigma must be a noise level"):
        PageDefaults(start_sigma=0.0)
    with pytest.raises(UserError, match="from 0.1 to 1 on the page"):
        PageDefaults(start_sigma=0.05)


def test_page_has_every_control_and_the_examples(tmp_path):
    examples = prepare_examples(tmp_path / "examples", count=2)
    assert [example.image.name for example in examples] == ["example_portrait_0.png", "example_portrait_1.png"]
    assert all(check_portrait(example.image) == (256, 256) for example in examples)
    app = build_app(generator=None, examples=examples, output_dir=tmp_path / "out", defaults=PageDefaults(steps=3))
    config = app.get_config_file()
    element_ids = {component.get("props", {}).get("elem_id") for component in config["components"]}
    assert {"portrait", "speech-source", "text", "voice", "speech-audio", "steps", "guidance", "seed",
            "guidance-region", "generate",
            "result-video", "download", "summary"} <= element_ids
    steps = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "steps")
    assert steps["props"]["value"] == 3
    region = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "guidance-region")
    assert region["props"]["value"] == "mouth"
    assert [choice[1] for choice in region["props"]["choices"]] == ["mouth", "frame"]
    start = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "start-sigma")
    assert start["props"]["value"] == DEFAULT_START_SIGMA and start["props"]["maximum"] == 1.0
    assert app.analytics_enabled is False


class RecordingGenerator:
    """Test double with ``AvatarGenerator.stream``'s signature: records the call, reports progress, and either
    raises the given error or yields two segments, the last with a result describing a video it pretends to
    have written."""

    def __init__(self, error: Exception | None = None):
        self.error = error
        self.calls = []

    def stream(self, image, text=None, audio=None, output="talking.mp4", segment_dir=None, tts="espeak",
               voice="en-us", steps=None, guidance=None, seed=0, guidance_region=None, start_sigma=None,
               progress=None):
        self.calls.append(dict(image=image, text=text, audio=audio, output=output, tts=tts, voice=voice,
                               steps=steps, guidance=guidance, seed=seed, guidance_region=guidance_region,
                               start_sigma=start_sigma))
        progress("speech", 1.0)
        progress("denoising", 0.5)
        if self.error is not None:
            raise self.error
        Path(segment_dir).mkdir(parents=True)
        for index in range(2):
            path = Path(segment_dir) / f"segment_{index:04d}.mp4"
            path.write_bytes(b"segment")
            result = None if index == 0 else SimpleNamespace(
                video_path=Path(output), duration=1.0, num_frames=25, height=64, width=64, fps=25.0,
                timings={"total": 1.0}, guidance_region={"region": "frame", "reason": "no mouth found (no face)"},
                start_sigma=0.85, steps_run=6, start_region={"region": "mouth", "tokens_per_frame": 4})
            yield SimpleNamespace(index=index, path=path, result=result)


def test_generate_handler_passes_the_request_and_maps_errors(portrait, tmp_path):
    import gradio as gr

    from avatar_gen.webapp import make_generate_handler

    reported = []

    def progress(fraction, desc=None):
        reported.append((desc, fraction))

    values = request_values(portrait, steps=3.0, guidance=2.5, seed=4.0, voice="en-gb", guidance_region="frame",
                            start_sigma=0.85)
    names = ("image", "speech_source", "text", "audio", "voice", "steps", "guidance", "seed", "guidance_region",
             "start_sigma")
    arguments = [values[name] for name in names]
    generator = RecordingGenerator()
    updates = list(make_generate_handler(generator, tmp_path / "out")(*arguments, progress=progress))
    # streamed: each segment as it comes, the download link and the description with the last one
    (first_segment, no_download, no_description), (last_segment, download, description) = updates
    assert Path(first_segment).name == "segment_0000.mp4" and no_download is None and no_description == ""
    assert Path(last_segment).name == "segment_0001.mp4"
    call = generator.calls[0]
    assert call == dict(image=str(portrait), text="Hello there.", audio=None, output=download, tts="espeak",
                        voice="en-gb", steps=3, guidance=2.5, seed=4, guidance_region="frame", start_sigma=0.85)
    assert Path(download).parent == tmp_path / "out" and Path(download).suffix == ".mp4"
    assert "25 frames" in description
    assert "Audio guidance on the whole frame: no mouth found (no face)." in description
    assert "6 denoising steps from the portrait at noise level 0.85, the mouth from pure noise." in description
    assert reported == [("starting", 0.0), ("speech", 1.0), ("denoising", 0.5)]
    assert not list((tmp_path / "out" / "segments").iterdir())  # the page has its copies; ours are removed
    # without streaming (no ffprobe on PATH) the video comes once, whole
    whole = list(make_generate_handler(generator, tmp_path / "out", streaming=False)(*arguments, progress=progress))
    assert len(whole) == 1 and whole[0][0] == whole[0][1] and Path(whole[0][0]).suffix == ".mp4"

    refusing = make_generate_handler(RecordingGenerator(UserError("no speech in the audio")), tmp_path / "out")
    with pytest.raises(gr.Error, match="no speech in the audio"):
        list(refusing(*arguments, progress=progress))
    broken = make_generate_handler(RecordingGenerator(RuntimeError("shape mismatch")), tmp_path / "out")
    with pytest.raises(gr.Error, match=r"generation failed \(RuntimeError: shape mismatch\)"):
        list(broken(*arguments, progress=progress))
    invalid = list(arguments)
    invalid[2] = ""
    with pytest.raises(gr.Error, match="type the text"):
        list(make_generate_handler(generator, tmp_path / "out")(*invalid, progress=progress))
    assert len(generator.calls) == 2


def load_app_script():
    """``app.py`` as a module (it sits at the repository root, outside the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("webapp_script", Path(__file__).resolve().parent.parent / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_app_script_refuses_bad_arguments_with_one_line(tmp_path, capsys):
    app_script = load_app_script()
    assert app_script.main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint not found: {tmp_path / 'missing'}"
    assert app_script.main(["--checkpoint", str(tmp_path), "--steps", "1"]) == 2
    assert "steps must be from 2 to 100" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        app_script.main(["--checkpoint", str(tmp_path), "--dtype", "fp64"])


def test_serve_reports_a_busy_port_as_a_user_error(tmp_path):
    import socket

    from avatar_gen.webapp import serve

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot serve on 127.0.0.1:{port}"):
            serve(generator=None, port=port, work_dir=tmp_path / "work", num_examples=1)
    assert (tmp_path / "work" / "examples" / "example_portrait_0.png").is_file()
