"""Placeholder until issue 6 lands: `--help` works, running says it is not built yet."""

from thermoscreen.cli import not_built

configure = not_built("issue 6")
