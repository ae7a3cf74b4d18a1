"""Every config file the project ships loads and validates, from any working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avatar_gen.config import load_config
from avatar_gen.toy.config import ToyPretrainConfig
from avatar_gen.training.config import TrainConfig, load_train_config

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
ALL_YAML = sorted(CONFIGS_DIR.rglob("*.yaml")) + sorted(CONFIGS_DIR.rglob("*.yml"))
TOY_PRETRAIN = CONFIGS_DIR / "toy-pretrain.yaml"
YAML_FILES = [path for path in ALL_YAML if path != TOY_PRETRAIN]  # training configs
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


def test_toy_pretrain_config_validates_and_points_at_a_shipped_base_config(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config = load_config(ToyPretrainConfig, TOY_PRETRAIN)
    assert Path(config.work_dir).is_absolute() and Path(config.output).is_relative_to(CONFIGS_DIR.parent)
    base = load_train_config(config.transformer.base_config)
    assert base.audio.conditioning == "fixed_caption" and base.lora.train_mode == "full"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_every_json_parses(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict) and data
