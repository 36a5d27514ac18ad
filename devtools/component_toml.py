"""Component config files written from the components' own pydantic models, with tomli-w.

Why from the models: a file is then valid by construction (the model validated it before it
was written), it is read back the way the component reads it (`transport.config_file`), and
nothing here has to know TOML's quoting rules. Only the values a caller set are written
(`exclude_unset`), so a generated file reads like an operator's: short, defaults implied.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import BaseModel

from transport.config_file import load_toml_model, validate_model

C = TypeVar("C", bound=BaseModel)


class ConfigWriteError(ValueError):
    """A config that would not read back as itself (TOML has no null, for one)."""


def build(model: type[C], data: dict[str, Any], *, source: str, overrides: Mapping[str, Any] | None = None) -> C:
    """`data` with dotted-key `overrides` applied, validated as `model` (ConfigError if invalid)."""
    return validate_model(data, model, source=source, overrides=dict(overrides or {}))


def dumps(config: BaseModel) -> str:
    """The TOML text of `config`: the fields that were set, without the ones set to None."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_unset=True, exclude_none=True))


def write(path: Path, config: BaseModel, *, header: str = "") -> Path:
    """Write `config` to `path` (with `header` as leading comment lines) and check that it reads back equal."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comment + dumps(config), encoding="utf-8")
    if load_toml_model(path, type(config)) != config:
        raise ConfigWriteError(f"{path}: the written config does not read back as the one given (a None value?)")
    return path
