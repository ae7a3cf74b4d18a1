"""``ltx_video/inference.py`` in-process: a run end to end, and every bad input -> exit 2, one line, no output."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from avatar_gen.audio.features import AudioEncoderSpec
from avatar_gen.inference import REQUEST_TEXT_MAX_CHARS
from avatar_gen.tiny.checkpoint import write_untrained_checkpoint
from avatar_gen.media import probe_video
from avatar_gen.synthetic.dataset import make_portrait

SCRIPT = Path(__file__).resolve().parent.parent / "ltx_video" / "inference.py"
SIZE = 64


def _load_script():
    spec = importlib.util.spec_from_file_location("ltx_video_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def run_dir(tiny_zoo, tmp_path_factory) -> Path:
    """A run folder as training leaves it: checkpoints/step_000000 and a 'latest' link."""
    run = tmp_path_factory.mktemp("run")
    spec = AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2"))
    write_untrained_checkpoint(run / "checkpoints" / "step_000000", tiny_zoo / "ltx-video", spec,
                               {"height": SIZE, "width": SIZE, "num_frames": 17, "fps": 25.0})
    (run / "checkpoints" / "latest").symlink_to("step_000000")
    return run


@pytest.fixture(scope="module")
def face(tmp_path_factory) -> Path:
    return make_portrait(tmp_path_factory.mktemp("face") / "face.png", seed=11, size=96)


def _run(script, capsys, argv: list[str]) -> tuple[int, str]:
    code = script.main(argv)
    return code, capsys.readouterr().err


def test_cli_end_to_end(script, capsys, run_dir, face, tmp_path):
    output = tmp_path / "out" / "talking.mp4"
    summary_path = tmp_path / "summary.json"
    code, err = _run(script, capsys, [
        "--image", str(face), "--text", "Hello, I am your avatar.",
        "--checkpoint", str(run_dir / "checkpoints" / "latest"), "--output", str(output),
        "--steps", "2", "--seed", "3", "--summary", str(summary_path), "--stream_dir", str(tmp_path / "live"),
        "--handoff", "latent", "--anchor", "statistics", "--chunk_memory"])
    assert code == 0, err
    segments = sorted((tmp_path / "live").glob("segment_*.mp4"))
    assert len(segments) >= 2 and sum(probe_video(segment).num_frames for segment in segments) == \
        probe_video(output).num_frames
    info = probe_video(output)
    summary = json.loads(summary_path.read_text())
    assert info.has_audio and (info.width, info.height) == (SIZE, SIZE)
    assert abs(info.duration - summary["duration"]) <= 1 / 25
    assert summary["num_frames"] == info.num_frames == round(summary["duration"] * 25)
    assert summary["seed"] == 3 and summary["steps"] == 2 and summary["video_path"] == str(output)
    assert set(summary["timings"]) >= {"speech", "audio_features", "denoising", "decoding", "writing", "first_second"}
    # long-speech figures: the hand-off used, every chunk's plan, seconds and peak memory, the boundaries
    assert summary["handoff"] == {"handoff": "latent", "latent_frames": 1, "anchor": "statistics",
                                  "given_latent_frames": 1}
    chunks = summary["chunks"]
    assert len(chunks) == summary["num_chunks"] == len(segments)
    assert all(chunk["seconds"] > 0 and chunk["peak_memory_mb"] > 0 for chunk in chunks)
    assert summary["boundaries"] == [chunk["first_frame"] for chunk in chunks[1:]]
    assert sum(chunk["frames"] for chunk in chunks) == info.num_frames


def test_cli_audio_input_with_run_folder_and_size_flags(script, capsys, run_dir, face, tmp_path):
    """--audio instead of --text, the run folder as --checkpoint, another size and fps."""
    rate = 8000
    time = np.arange(int(0.9 * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * time) * (1 + np.sin(2 * np.pi * 3 * time))).astype(np.float32)
    wav = tmp_path / "speech.wav"
    soundfile.write(str(wav), tone, rate)
    output = tmp_path / "tone.mp4"
    code, err = _run(script, capsys, [
        "--image", str(face), "--audio", str(wav), "--checkpoint", str(run_dir), "--output", str(output),
        "--steps", "2", "--height", "32", "--width", "96", "--fps", "20", "--guidance", "1"])
    assert code == 0, err
    info = probe_video(output)
    assert (info.width, info.height) == (96, 32) and info.fps == 20
    assert info.num_frames == 18 and abs(info.duration - 0.9) <= 1 / 20


def _write_bad_inputs(folder: Path, face: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(face.read_bytes()[:200])  # a PNG cut short
    not_image = folder / "notes.png"
    not_image.write_text("this is not a picture\n")
    tiny = folder / "tiny.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tiny)
    silent = folder / "silent.wav"
    soundfile.write(str(silent), np.zeros(16000, np.float32), 16000)
    garbage = folder / "garbage.wav"
    garbage.write_bytes(b"RIFF????WAVEfmt " + bytes(range(256)) * 4)
    return {"corrupt": corrupt, "not_image": not_image, "tiny": tiny, "silent": silent, "garbage": garbage}


@pytest.fixture(scope="module")
def broken_checkpoints(run_dir, tiny_zoo, tmp_path_factory) -> dict[str, Path]:
    """Copies of the good checkpoint with a file missing or cut short, and a base model of other dimensions."""
    from diffusers import LTXImageToVideoPipeline, LTXVideoTransformer3DModel

    from avatar_gen.tiny import tiny_ltx_components

    good = run_dir / "checkpoints" / "step_000000"
    root = tmp_path_factory.mktemp("broken")
    missing = root / "missing"
    shutil.copytree(good, missing)
    (missing / "audio_projection.safetensors").unlink()
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "pytorch_lora_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    components = tiny_ltx_components(seed=0)
    components["transformer"] = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=16,
        cross_attention_dim=32, num_layers=1, caption_channels=32)
    other_base = root / "other-base"
    LTXImageToVideoPipeline(text_encoder=None, tokenizer=None, **components).save_pretrained(str(other_base))
    projection_cut = root / "projection-cut"
    shutil.copytree(good, projection_cut)
    projection = projection_cut / "audio_projection.safetensors"
    projection.write_bytes(projection.read_bytes()[:-40])
    metadata_not_utf8 = root / "metadata-not-utf8"
    shutil.copytree(good, metadata_not_utf8)
    metadata = metadata_not_utf8 / "avatar_checkpoint.json"
    metadata.write_bytes(metadata.read_bytes().replace(b'"step"', b'"st\xe9p"'))  # Latin-1, not UTF-8
    diverged = root / "diverged"  # what a run with a far too large learning rate would have saved
    shutil.copytree(good, diverged)
    lora_file = diverged / "pytorch_lora_weights.safetensors"
    with safe_open(str(lora_file), "pt") as opened:
        lora_metadata, tensors = opened.metadata(), {key: opened.get_tensor(key) for key in opened.keys()}  # noqa: SIM118
    first = sorted(tensors)[0]
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, str(lora_file), metadata=lora_metadata)
    huge = root / "huge"  # finite weights so large that every output is NaN: a run diverged one step before
    shutil.copytree(good, huge)
    lora_file = huge / "pytorch_lora_weights.safetensors"
    save_file({key: torch.full_like(value, 1e30) for key, value in tensors.items()}, str(lora_file),
              metadata=lora_metadata)
    return {"good": good, "missing": missing, "truncated": truncated, "other_base": other_base,
            "projection_cut": projection_cut, "metadata_not_utf8": metadata_not_utf8, "diverged": diverged,
            "huge": huge}


BAD_CASES = {
    # name: (argv changes, words the error line must contain)
    "missing image": ({"--image": "{tmp}/nowhere.png"}, "image not found"),
    "corrupt image": ({"--image": "{corrupt}"}, "cannot read image"),
    "not an image": ({"--image": "{not_image}"}, "not an image file"),
    "image too small": ({"--image": "{tiny}"}, "at least 64 px"),
    "empty text": ({"--text": "   "}, "text is empty"),
    "text too long": ({"--text": "la " * (REQUEST_TEXT_MAX_CHARS // 2)}, f"limit is {REQUEST_TEXT_MAX_CHARS}"),
    "silent audio": ({"--text": None, "--audio": "{silent}"}, "silent"),
    "unreadable audio": ({"--text": None, "--audio": "{garbage}"}, "audio"),
    "missing audio": ({"--text": None, "--audio": "{tmp}/nowhere.wav"}, "audio file not found"),
    "checkpoint missing": ({"--checkpoint": "{tmp}/no-run"}, "checkpoint not found"),
    "checkpoint missing a file": ({"--checkpoint": "{missing}"}, "audio_projection.safetensors missing"),
    "checkpoint cut short": ({"--checkpoint": "{truncated}"}, "could not be loaded"),
    "projection cut short": ({"--checkpoint": "{projection_cut}"}, "audio_projection.safetensors is cut short"),
    "metadata not UTF-8": ({"--checkpoint": "{metadata_not_utf8}"}, "avatar_checkpoint.json is not UTF-8 text"),
    "diverged weights": ({"--checkpoint": "{diverged}"}, "holds non-finite weights (NaN or infinity) in 1 tensor"),
    "huge weights": ({"--checkpoint": "{huge}"}, "made NaN/inf latents: its weights have diverged"),
    "other base model": ({"--pretrained": "{other_base}"}, "different base model: num_layers 2 vs base 1"),
    "bad size": ({"--height": "48"}, "multiples of 32"),
    "one regular step": ({"--steps": "1"}, "at least 2"),
    "bad timesteps": ({"--timesteps": ["500", "900"]}, "strictly decreasing"),
    "empty guidance interval": ({"--guidance_interval": ["0.8", "0.2"]}, "guidance interval needs 0 <= low < high"),
    "start above pure noise": ({"--start_sigma": "1.5"}, "start_sigma must be a noise level in"),
    "not mp4": ({"--output": "{tmp}/talking.avi"}, ".mp4"),
    "stream dir is a file": ({"--stream_dir": "{corrupt}"}, "is a file"),
    "fp8 on a CPU": ({"--fp8": []}, "FP8 weights need a CUDA GPU"),
    "unknown attention backend": ({"--attention_backend": "fastest"}, "unknown attention backend"),
    "anchor without the latent hand-off": ({"--handoff": "frame", "--anchor": "portrait"}, "needs the latent hand-off"),
    "hand-off longer than a chunk": ({"--handoff_frames": "3"}, "give at most 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_2_with_one_line_and_no_output(case, script, capsys, face, broken_checkpoints, tmp_path):
    files = _write_bad_inputs(tmp_path / "inputs", face)
    names = {"tmp": str(tmp_path), **{key: str(value) for key, value in {**files, **broken_checkpoints}.items()}}
    output = tmp_path / "talking.mp4"
    arguments = {"--image": str(face), "--text": "Hello.", "--checkpoint": str(broken_checkpoints["good"]),
                 "--output": str(output), "--steps": "2"}
    changes, expected = BAD_CASES[case]
    for flag, value in changes.items():
        if value is None:
            arguments.pop(flag)
        else:
            filled = [item.format(**names) for item in value] if isinstance(value, list) else value.format(**names)
            arguments[flag] = filled
    argv = []
    for flag, value in arguments.items():
        argv += [flag, *value] if isinstance(value, list) else [flag, value]
    code, err = _run(script, capsys, argv)
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(error_lines) == 1 and expected in error_lines[0], err
    assert "Traceback" not in err
    assert not output.exists() and not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".tmp-*"))
