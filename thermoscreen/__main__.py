"""`python -m thermoscreen` is the `thermoscreen` command."""

from thermoscreen.cli import run_main

run_main()
