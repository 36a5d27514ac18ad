"""`--log-format json`: every log line of a real component process is one JSON object."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from thermoscreen.logs import setup_logging


def test_json_line_carries_ts_level_component_event_and_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(1, "json", component="bridge")
    try:
        logging.getLogger("cloud_bridge.test").info("stored %d items", 3, extra={"device_id": "pi-1"})
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            logging.getLogger("cloud_bridge.test").exception("sink failed")
    finally:
        setup_logging(0, "text", component="tests")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines  # a multi-line traceback stays on one line
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "component", "event", "fields"}
    assert first["level"] == "info" and first["component"] == "bridge"
    assert first["event"] == "stored 3 items"
    assert first["fields"] == {"logger": "cloud_bridge.test", "device_id": "pi-1"}
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "error" and "RuntimeError: boom" in second["fields"]["exception"]


def test_a_sensor_process_logs_only_json_lines_on_stderr(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thermoscreen", "-v", "sensor", "--log-format", "json", "--source", "synthetic",
         "--rfid", "scripted", "--duration", "0.5", "--broker", "mqtt://127.0.0.1:9",
         "--spool", str(tmp_path / "spool.db")],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    logged = [line for line in result.stderr.splitlines() if not line.startswith("thermoscreen sensor:")]
    assert logged, result.stderr  # -v: at least the warnings about the missing site key and card script
    for line in logged:
        record = json.loads(line)
        assert record["component"] == "sensor"
        assert record["level"] in {"debug", "info", "warning", "error", "critical"}


def test_bad_log_format_in_the_environment_is_one_line_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thermoscreen", "protocol", "encode-sample", "frame"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={"THERMOSCREEN_LOG_FORMAT": "yaml", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "THERMOSCREEN_LOG_FORMAT" in result.stderr
