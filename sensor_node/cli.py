"""Placeholder until issue 3 lands: `--help` works, running says it is not built yet."""

from thermoscreen.cli import not_built

configure = not_built("issue 3")
