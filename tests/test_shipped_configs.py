"""Every config file the project ships loads and validates, from any working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avatar_gen.training.config import TrainConfig, load_train_config

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
YAML_FILES = sorted(CONFIGS_DIR.rglob("*.yaml")) + sorted(CONFIGS_DIR.rglob("*.yml"))
JSON_FILES = sorted(CONFIGS_DIR.rglob("*.json"))


def test_there_are_configs_to_check():
    names = {path.name for path in YAML_FILES}
    assert {"train-avatars.yaml", "train-tiny.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_every_yaml_validates_and_resolves_paths_against_its_folder(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing may depend on the working directory
    config = load_train_config(path)
    assert isinstance(config, TrainConfig)
    assert Path(config.data.vae_latents).is_absolute()
    assert Path(config.data.vae_latents).is_relative_to(CONFIGS_DIR.parent)
    if config.distributed.deepspeed_config is not None:
        assert Path(config.distributed.deepspeed_config).is_file()


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_every_json_parses(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict) and data
