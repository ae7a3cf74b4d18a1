"""Shared fixtures: the tiny model zoo and synthetic talking-face clips, built once per test session."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# Tests never reach a model hub: fail fast instead of hanging on a network call.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARTIFACTS_DIR = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Entry points called in-process configure the root logger (``setup_logging``: ``basicConfig``) with a handler on
    the stderr pytest captured for that test; without this, later tests' log records go to that closed stream
    ("Logging error: I/O operation on closed file" in their reports)."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in root.handlers[:]:
        if type(handler) is logging.StreamHandler:  # basicConfig's; pytest's own handlers are subclasses
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """Folder written by ``python -m avatar_gen.tiny`` (every registered tiny model)."""
    from avatar_gen.tiny import build_tiny_zoo

    out = tmp_path_factory.mktemp("tiny_zoo")
    build_tiny_zoo(out, seed=0)
    return out


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files worth looking at (screenshots, reports); ignored by git."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """``(out_dir, clips)``: 4 talking clips, 1 two-face clip and 1 silent clip (seed 0, 256x256, 25 fps).

    Written by :func:`avatar_gen.synthetic.generate_dataset`: ``out_dir/clips/<id>.mp4``,
    ``out_dir/ground_truth/<id>.json`` and ``out_dir/avspeech.csv``.  Shared by the whole session:
    copy files before changing them.
    """
    from avatar_gen.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic")
    clips = generate_dataset(out, num_clips=4, seed=0, two_face_clips=1, silent_clips=1)
    return out, clips


@pytest.fixture(scope="session")
def webapp_checkpoint(tiny_zoo, tmp_path_factory) -> Path:
    """An untrained LoRA checkpoint over the tiny zoo (tiny wav2vec2 features), 64x64 video in 17-frame chunks."""
    from avatar_gen.audio.features import AudioEncoderSpec
    from avatar_gen.tiny.checkpoint import write_untrained_checkpoint

    spec = AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2"))
    return write_untrained_checkpoint(tmp_path_factory.mktemp("webapp_run") / "step_000000", tiny_zoo / "ltx-video",
                                      spec, {"height": 64, "width": 64, "num_frames": 17, "fps": 25.0})


@pytest.fixture(scope="session")
def webapp_server(webapp_checkpoint, tmp_path_factory):
    """``python app.py`` on the tiny checkpoint, started once for the session (its start costs most of a minute)
    and not waited for (call ``wait_until_serving``).  At the end it must still be up, stop on SIGTERM with exit 0,
    leave no process behind and have logged no traceback, whatever the tests sent it."""
    from webapp_server import start_webapp, stop_webapp

    server = start_webapp(webapp_checkpoint, tmp_path_factory.mktemp("webapp_server"))
    yield server
    stop_webapp(server)
