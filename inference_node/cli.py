"""Placeholder until issue 5 lands: `--help` works, running says it is not built yet."""

from thermoscreen.cli import not_built

configure = not_built("issue 5")
