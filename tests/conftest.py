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
