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
    for overrides in config.transformer.continue_phases:  # each further base run validates over the base config
        phase = load_config(TrainConfig, config.transformer.base_config, overrides)
        assert phase.audio.conditioning == "fixed_caption" and phase.lora.train_mode == "full"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_every_json_parses(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict) and data


def test_the_real_recipe_trains_the_continuation_that_inference_uses():
    """Long speech continues each chunk from the previous one's last latent frames: the real recipe must train that,
    and the hand-off inference picks for its checkpoints (with and without the portrait anchor) must stay within
    what it trained and leave new frames in a chunk of the default latents stage's length."""
    from avatar_gen.inference.handoff import resolve_handoff
    from avatar_gen.latents.encode import LatentsConfig
    from avatar_gen.ltx import LTX_TEMPORAL_COMPRESSION

    conditioning = load_train_config(CONFIGS_DIR / "train-avatars.yaml").conditioning
    assert conditioning.first_frame_probability > 0 and conditioning.continuation_probability > 0
    chunk_latent_frames = (LatentsConfig.model_fields["num_frames"].default - 1) // LTX_TEMPORAL_COMPRESSION + 1
    for anchor in ("none", "portrait", "auto"):
        handoff = resolve_handoff("auto", None, anchor, trained_frames=conditioning.continuation_max_frames,
                                  chunk_latent_frames=chunk_latent_frames)
        assert handoff.mode == "latent" and 2 <= handoff.given_latent_frames <= conditioning.continuation_max_frames
        assert handoff.given_latent_frames <= chunk_latent_frames // 3  # most of every chunk stays new
