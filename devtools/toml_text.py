"""Just enough TOML writing for the config files the local stack generates (no extra dependency).

Values: str, Path, bool, int, float, lists of those, and nested tables (dicts). Strings are
written as JSON strings, which are valid TOML basic strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

Scalar = str | Path | bool | int | float


def _value(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: TOML has no {value}")
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise TypeError(f"{where}: cannot write {type(value).__name__} as TOML")


def dumps(data: Mapping[str, object]) -> str:
    """`data` as a TOML document: plain keys first, then one [table] per nested mapping."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: Mapping[str, object], path: list[str], lines: list[str]) -> None:
    tables = []
    if path:
        lines.append("")
        lines.append(f"[{'.'.join(path)}]")
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_value(value, '.'.join([*path, key]))}")
    for key, value in tables:
        _table(value, [*path, key], lines)


def merge(base: Mapping[str, object], dotted: Mapping[str, object]) -> dict[str, object]:
    """A copy of `base` with `{"a.b": v}` overrides applied (tables are created as needed)."""
    out = _copy(base)
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def _copy(data: Mapping[str, object]) -> dict[str, object]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
