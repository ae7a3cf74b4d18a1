"""Shared fixtures: the tiny model zoo and synthetic talking-face clips, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub: fail fast instead of hanging on a network call.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARTIFACTS_DIR = Path(__file__).resolve().parent.parent / "test-artifacts"


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
