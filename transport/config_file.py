"""Loading a component's TOML configuration file into its pydantic model, with one-line errors.

Every component keeps one config file; secrets never live there (they come from environment
variables or files named in it). Errors name the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from contract.messages import describe_validation_error

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file that is missing, unreadable or invalid; the message is one line."""


def load_toml_model(path: str | Path, model: type[C], overrides: dict[str, Any] | None = None) -> C:
    """Read `path` as TOML, apply dotted-key `overrides` (from the CLI) and validate it as `model`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return validate_model(raw, model, source=str(p), overrides=overrides)


def validate_model(raw: dict[str, Any], model: type[C], *, source: str, overrides: dict[str, Any] | None = None) -> C:
    """Validate a config dict (after applying dotted-key overrides) with a one-line error."""
    data = dict(raw)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
            node[key] = dict(child)
            node = node[key]
        node[leaf] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None
