"""The `thermoscreen` command: one entry point that dispatches to each component's CLI.

This package holds only the launcher and the cross-component jobs (demo, end-to-end benches,
protocol tools). The components never import it.
"""
