"""The `thermoscreen` command: help everywhere, one-line errors, protocol decode/encode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from thermoscreen.cli import SUBCOMMANDS


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args], input=stdin, capture_output=True, timeout=120, check=False
    )


def test_top_level_help_lists_every_job() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for name, _, _ in SUBCOMMANDS:
        assert name in out.stdout.decode()


@pytest.mark.parametrize("name", [name for name, _, _ in SUBCOMMANDS])
def test_each_subcommand_has_help(name: str) -> None:
    out = run_cli(name, "--help")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().startswith("usage: thermoscreen " + name)


def test_encode_sample_then_decode(tmp_path: Path) -> None:
    sample = tmp_path / "frame.bin"
    assert run_cli("protocol", "encode-sample", "--out", str(sample)).returncode == 0
    out = run_cli("protocol", "decode", str(sample))
    assert out.returncode == 0
    summary = json.loads(out.stdout)
    assert summary["type"] == "frame"
    assert (summary["rows"], summary["cols"]) == (24, 32)
    assert 25 < summary["temperature_c"]["mean"] < 40


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"garbage", "neither a TSF frame nor a JSON object"),
        (b"TSF\x01\x05abc", "truncated"),
        (b'{"v": 1, "state": "sideways"}', "state"),
    ],
)
def test_decode_rejects_garbage_with_exit_2_and_one_line(payload: bytes, needle: str) -> None:
    out = run_cli("protocol", "decode", "-", stdin=payload)
    assert out.returncode == 2
    err = out.stderr.decode().strip()
    assert len(err.splitlines()) == 1
    assert needle in err
    assert out.stdout == b""


def test_decode_missing_file_is_one_line(tmp_path: Path) -> None:
    out = run_cli("protocol", "decode", str(tmp_path / "nope.bin"))
    assert out.returncode == 2
    assert len(out.stderr.decode().strip().splitlines()) == 1


def test_version_names_package_contract_and_shipped_model() -> None:
    from importlib.metadata import version

    from contract import PROTOCOL_VERSION
    from contract.frame import FORMAT_VERSION
    from contract.messages import MESSAGE_VERSION
    from contract.model.shipped import shipped_model_version

    out = run_cli("--version")
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    expected = (
        f"thermoscreen {version('thermoscreen')} contract v{PROTOCOL_VERSION} "
        f"(frame format {FORMAT_VERSION}, message format {MESSAGE_VERSION})"
    )
    assert lines[0].startswith(expected), lines[0]
    assert FORMAT_VERSION == 2 and MESSAGE_VERSION == 2  # device incarnations (docs/protocol.md)
    assert lines[0].endswith(f"shipped model {shipped_model_version()}")
