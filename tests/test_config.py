"""Typed YAML configs: strict keys, bounds, choices, paths relative to the config file, clear errors."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from avatar_gen.config import (ConfigPath, StrictModel, add_field_flag, apply_overrides, config_from_flags, dump_config,
                               load_config)
from avatar_gen.errors import ConfigError


class DataSection(StrictModel):
    root: ConfigPath
    batch_size: int = Field(1, ge=1, le=64)


class ExampleConfig(StrictModel):
    data: DataSection
    mode: Literal["global", "local"] = "global"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    config_file = _write(tmp_path / "configs" / "run.yaml", "data:\n  root: ../data/latents\n  batch_size: 4\n")
    monkeypatch.chdir(tmp_path / "configs")
    from_inside = load_config(ExampleConfig, "run.yaml")
    monkeypatch.chdir(tmp_path)
    from_root = load_config(ExampleConfig, config_file)
    assert from_inside.data.root == from_root.data.root == (tmp_path / "data" / "latents").resolve()
    assert "batch_size: 4" in dump_config(from_root)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  root: x\n  batch_sise: 2\n", "data.batch_sise: unknown key"),
        ("data:\n  root: x\n  batch_size: 0\n", "data.batch_size: Input should be greater than or equal to 1"),
        ("data:\n  root: x\nmode: diagonal\n", "mode: Input should be 'global' or 'local'"),
        ("data: [1, 2]\n", "data: Input should be a valid dictionary"),
        ("- just\n- a list\n", "must be a mapping"),
        ("data: {root: x\n", "cannot parse config"),
    ],
)
def test_invalid_configs_give_one_clear_line(tmp_path, text, message):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(ExampleConfig, path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(ExampleConfig, tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = _write(tmp_path / "run.yaml", "data:\n  root: data\n")
    config = load_config(ExampleConfig, path, overrides=["data.batch_size=8", "mode=local"])
    assert config.data.batch_size == 8 and config.mode == "local"
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(ExampleConfig, path, overrides=["data.batch_size=1000"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["no-equals-sign"])


class FlagsConfig(StrictModel):
    output_dir: Path
    fps: float = Field(25.0, gt=0)
    face_filter: bool = True


def test_flags_take_defaults_from_the_model_and_bad_values_name_the_flag(capsys):
    parser = argparse.ArgumentParser()
    add_field_flag(parser, FlagsConfig, "output_dir", "where", required=True)
    add_field_flag(parser, FlagsConfig, "fps", "frame rate", type=float)
    parser.add_argument("--no_face_filter", action="store_true")
    assert "frame rate (default: 25.0)" in " ".join(parser.format_help().split())
    args = parser.parse_args(["--output_dir", "out"])
    config = config_from_flags(FlagsConfig, args, face_filter=not args.no_face_filter)
    assert (config.output_dir, config.fps, config.face_filter) == (Path("out"), 25.0, True)
    args = parser.parse_args(["--output_dir", "out", "--fps", "-1", "--no_face_filter"])
    with pytest.raises(ConfigError) as error:
        config_from_flags(FlagsConfig, args, flags={"face_filter": "--no_face_filter"}, face_filter="maybe")
    assert str(error.value).startswith("--fps: Input should be greater than 0; --no_face_filter: ")
    assert "\n" not in str(error.value)
