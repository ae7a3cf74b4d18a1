"""User mistakes at every stage script: one ``error:`` line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _script_main(relative_path: str):
    spec = importlib.util.spec_from_file_location(Path(relative_path).stem + "_under_test", REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture()
def junk(tmp_path) -> dict[str, Path]:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    fake_image = tmp_path / "face.png"
    fake_image.write_text("this is not an image\n")
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "configs" / "train-tiny.yaml").read_text())
    return {"text_video": text, "text_image": fake_image, "config": config, "missing": tmp_path / "missing.mp4",
            "tmp": tmp_path}


def _cases(junk: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    tmp = junk["tmp"]
    return [
        ("video_scraper/scrap_video.py",
         ["--csv_path", str(tmp / "missing.csv"), "--output_dir", str(tmp / "raw"),
          "--transcripts_file", str(tmp / "t.json")], "missing.csv"),
        ("preprocessing/save_vae_latents.py",
         ["--inputs", str(junk["missing"]), "--output_dir", str(tmp / "latents")], "missing.mp4"),
        ("preprocessing/save_vae_latents.py",
         ["--inputs", str(junk["text_video"]), "--output_dir", str(tmp / "latents"), "--num_frames", "0"],
         "num_frames"),  # (a count the loaded VAE cannot take: tests/test_vae_latents.py)
        ("preprocessing/save_text_latents.py",
         ["--latents_dir", str(tmp / "nope"), "--audio_out", str(tmp / "wav"), "--ff_out", str(tmp / "ff"),
          "--audio_source", "original"], "nope"),
        ("preprocessing/save_mouth_boxes.py", ["--latents_dir", str(tmp / "nope"), "--out", str(tmp / "boxes")],
         "nope"),
        ("ltx_video/training.py", ["--config", str(tmp / "missing.yaml")], "missing.yaml"),
        ("ltx_video/training.py", ["--config", str(junk["config"]), "--override", "optimization.learning_rat=1"],
         "unknown key"),
        ("ltx_video/training.py", ["--config", str(junk["config"]), "--override", "optimization.max_steps=-5"],
         "max_steps"),
        ("ltx_video/inference.py",
         ["--image", str(junk["text_image"]), "--text", "hello", "--checkpoint", str(tmp / "ckpt"),
          "--output", str(tmp / "out.mp4")], "face.png"),
        ("ltx_video/evaluate.py", ["--generated", str(tmp / "no-such-dir"), "--out", str(tmp / "eval")],
         "no-such-dir"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_user_mistakes_are_one_line_and_exit_2(index, junk, capsys):
    script, argv, mentioned = _cases(junk)[index]
    code = _script_main(script)(argv)
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, (script, argv, err)
    assert len(error_lines) == 1, err
    assert mentioned in error_lines[0], err
    assert "Traceback" not in err
    assert not (junk["tmp"] / "out.mp4").exists()
