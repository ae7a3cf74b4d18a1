"""The demo's own pieces: the speech strip it draws, its refusal without the toy world, its per-video summary.

The whole chain runs in CI as ``make demo``; these check what that run cannot show failing.
"""

from __future__ import annotations

import numpy as np
import pytest

from avatar_gen import demo
from avatar_gen.errors import UserError
from avatar_gen.evaluation.strip import strip_frame_indices, write_speech_strip
from avatar_gen.media.audio import SAMPLE_RATE
from avatar_gen.media.video import write_video
from avatar_gen.utils.io import atomic_write_json


def test_strip_frames_are_spread_over_the_whole_video():
    assert strip_frame_indices(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert strip_frame_indices(3, 10).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        strip_frame_indices(0, 4)


def _video(path, with_sound: bool):
    frames = np.zeros((20, 64, 64, 3), dtype=np.uint8)
    frames[:, 20:40, 20:40] = np.linspace(0, 255, 20, dtype=np.uint8)[:, None, None, None]
    sound = (0.3 * np.sin(np.arange(SAMPLE_RATE) * 2 * np.pi * 220 / SAMPLE_RATE)).astype(np.float32)
    return write_video(path, frames, fps=25, audio=sound if with_sound else None)


def test_speech_strip_is_an_image_and_refuses_a_silent_video(tmp_path):
    from PIL import Image

    png = write_speech_strip(_video(tmp_path / "a.mp4", with_sound=True), tmp_path / "strip.png", count=4, title="t")
    with Image.open(png) as image:
        assert image.width > image.height > 100
    with pytest.raises(UserError, match="no sound"):
        write_speech_strip(_video(tmp_path / "silent.mp4", with_sound=False), tmp_path / "silent.png")
    assert not (tmp_path / "silent.png").exists()


def test_demo_without_the_toy_world_says_how_to_get_it_in_one_line(tmp_path, capsys):
    code = demo.main(["--out", str(tmp_path / "out"), "--toy_base", str(tmp_path / "missing")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert "model_index.json is missing" in error and "avatar_gen.toy pretrain" in error
    code = demo.main(["--out", str(tmp_path / "out"), "--toy_checkpoint", str(tmp_path / "missing")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert "checkpoint not found" in error and "configs/train-toy.yaml" in error


def test_demo_summary_reads_each_videos_figures_from_the_evaluation(tmp_path):
    atomic_write_json(tmp_path / "metrics.json", {"clips": {
        "talking": {"offline_sync": {"score": 0.5, "best_lag": 1}, "face": {"detection_rate": 1.0},
                    "temporal": {"drift_ssim_mean": 0.8}},
        "talking_toy": {"temporal": {"drift_ssim_mean": 0.7}}}})
    figures = demo._per_video_figures(tmp_path)
    assert figures["talking"] == {"face_found": 1.0, "sync_at_0": 0.5, "best_lag": 1, "identity_ssim": 0.8}
    assert figures["talking_toy"]["sync_at_0"] is None and figures["talking_toy"]["identity_ssim"] == 0.7
