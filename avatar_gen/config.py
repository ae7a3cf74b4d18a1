"""Typed configs, loaded from YAML or built from a stage script's flags.

Every config is a :class:`StrictModel` (pydantic, ``extra="forbid"``): an unknown or misspelt key is an
error, not a silently ignored setting.  Path fields typed :data:`ConfigPath` are resolved against the
folder of the YAML file they came from, so ``python ltx_video/training.py --config configs/x.yaml`` and
``cd ltx_video && python training.py --config ../configs/x.yaml`` read the same files.  A stage configured by
flags declares them with :func:`add_field_flag` and builds its config with :func:`config_from_flags`: the
defaults live only in the model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from avatar_gen.errors import ConfigError, first_line

ModelT = TypeVar("ModelT", bound=BaseModel)


def _resolve_against_config_dir(value: Path, info: ValidationInfo) -> Path:
    value = Path(os.path.expanduser(str(value)))
    base_dir = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base_dir is not None:
        value = Path(base_dir) / value
    return Path(os.path.normpath(value)) if value.is_absolute() else value


ConfigPath = Annotated[Path, AfterValidator(_resolve_against_config_dir)]
"""A path that, when relative, is taken relative to the config file's folder."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys rejected, values re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, ``section.key: message``, for humans."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{where}: {message}")
    return f"invalid config {source}: " + "; ".join(problems)


def validate_config(model: type[ModelT], data: dict[str, Any], base_dir: str | os.PathLike | None = None,
                    source: str = "(in memory)") -> ModelT:
    try:
        return model.model_validate(data, context={"base_dir": None if base_dir is None else Path(base_dir).resolve()})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse config {path}: {first_line(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a raw config dict."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override must look like section.key=value, got {override!r}")
        dotted, raw_value = override.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted}: {key} is not a section")
            node = child
        try:
            node[keys[-1]] = yaml.safe_load(raw_value)
        except yaml.YAMLError:
            raise ConfigError(f"override {dotted}: cannot parse value {raw_value!r}") from None
    return data


def load_config(model: type[ModelT], path: str | os.PathLike, overrides: list[str] | None = None) -> ModelT:
    """Load ``path`` (YAML) into ``model``; relative paths resolve against the file's folder."""
    path = Path(path)
    data = apply_overrides(load_yaml(path), overrides or [])
    return validate_config(model, data, base_dir=path.parent, source=str(path))


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (absolute paths), for saving beside a run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# ----------------------------------------------------------------------------------------------- from flags

def field_default(model: type[BaseModel], name: str) -> Any:
    """The default of field ``name`` of ``model``."""
    return model.model_fields[name].get_default(call_default_factory=True)


def add_field_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel], name: str,
                   help: str, flag: str | None = None, **kwargs: Any) -> None:
    """Add ``--name`` (or ``flag``) for field ``name`` of ``model``; ``--help`` shows the model's default.

    The parsed value is None when the flag is not given, so :func:`config_from_flags` leaves the model's default.
    """
    default = None if model.model_fields[name].is_required() else field_default(model, name)
    shown = "" if default is None or isinstance(default, bool) else f" (default: {default})"
    parser.add_argument(flag or f"--{name}", dest=name, default=None, help=help + shown, **kwargs)


def config_from_flags(model: type[ModelT], args: argparse.Namespace, flags: dict[str, str] | None = None,
                      **values: Any) -> ModelT:
    """``model`` from the parsed flags named like its fields, plus ``values`` (fields given another way).

    None means "not given" (the model's default applies).  A bad value raises a :class:`ConfigError` of one line,
    ``--flag: message``; ``flags`` names the flag of a field whose flag is not ``--<field>``.
    """
    data = {name: value for name, value in vars(args).items() if name in model.model_fields}
    data.update(values)
    try:
        return model.model_validate({name: value for name, value in data.items() if value is not None},
                                    context={"base_dir": None})
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            field = str(item["loc"][0]) if item["loc"] else None
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
            where = (flags or {}).get(field, f"--{field}") if field else None
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError("; ".join(problems)) from None
