"""Placeholder until issue 8 lands: `--help` works, running says it is not built yet."""

from thermoscreen.cli import not_built

configure = not_built("issue 8")
