"""The systemd units in deploy/systemd/: verified by systemd itself, hardened, and runnable as written."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from thermoscreen.cli import build_parser

UNITS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNITS = sorted(UNITS_DIR.glob("*.service"))
INSTALLED_BINARY = "/opt/thermoscreen/venv/bin/thermoscreen"


def unit_entries(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (keys may repeat, e.g. LoadCredential), by key."""
    entries: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        entries.setdefault(key, []).append(value)
    return entries


def test_there_is_a_unit_per_long_running_component() -> None:
    assert {p.stem for p in UNITS} == {"thermoscreen-sensor", "thermoscreen-inference", "thermoscreen-bridge"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_every_unit_without_a_warning(tmp_path: Path) -> None:
    # verify checks that ExecStart= is executable: point it at this venv's console script.
    binary = Path(sys.executable).with_name("thermoscreen")
    assert binary.exists(), f"{binary} missing: is the package installed in this venv?"
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(binary)), encoding="utf-8")
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys are only warnings (exit 0): any output at all is a defect in the unit.
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.stem)
def test_each_unit_is_a_hardened_notify_service_with_its_own_state_and_secrets(unit: Path) -> None:
    entries = unit_entries(unit)
    assert entries["Type"] == ["notify"]
    assert entries["Restart"] == ["on-failure"]
    assert int(entries["WatchdogSec"][0]) > 0
    assert entries["NoNewPrivileges"] == ["yes"]
    assert entries["ProtectSystem"] == ["strict"]
    assert entries["UMask"] == ["0077"]
    assert entries["StateDirectory"] == [unit.stem]
    assert entries["StateDirectoryMode"] == ["0700"]
    assert entries.get("DynamicUser") == ["yes"] or entries.get("User") == ["thermoscreen"]
    assert any(c.startswith("mqtt-password:") for c in entries["LoadCredential"])
    assert "root" not in entries.get("User", [])


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.stem)
def test_every_command_line_in_a_unit_parses_with_the_real_cli(unit: Path) -> None:
    entries = unit_entries(unit)
    commands = entries.get("ExecStartPre", []) + entries["ExecStart"]
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == INSTALLED_BINARY
        args = build_parser().parse_args(argv[1:])
        assert args.command in unit.stem or (args.command == "infer" and unit.stem.endswith("inference"))


def test_the_sensor_user_is_declared_for_sysusers() -> None:
    text = (UNITS_DIR / "thermoscreen.sysusers.conf").read_text(encoding="utf-8")
    lines = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0][:2] == ["u", "thermoscreen"]
    assert {line[2] for line in lines if line[0] == "m"} == {"gpio", "i2c", "spi"}
