"""`thermoscreen patients ...` as real processes: data on stdout, one-line errors with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.ids import make_patient_ref

UID_HEX = "04:a2:2b:19"


@pytest.fixture
def env(registry_key: bytes, site_key: bytes) -> dict[str, str]:
    return {
        **os.environ,
        "THERMOSCREEN_REGISTRY_KEY": registry_key.hex(),
        "THERMOSCREEN_SITE_KEY": site_key.hex(),
        "THERMOSCREEN_LOG_FORMAT": "text",
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", "patients", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def _ok(env: dict[str, str], *args: str) -> dict[str, object]:
    out = _cli(env, *args, "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    return data


def _one_line_error(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert needle in out.stderr
    assert out.stdout == ""


def test_enrol_list_show_lookup_and_a_verified_audit(
    env: dict[str, str], registry_path: Path, site_key: bytes, tmp_path: Path
) -> None:
    reg = ["--registry", str(registry_path)]
    site_key_file = tmp_path / "site.hex"
    site_key_file.write_text(site_key.hex())
    enrol = _ok(
        {**env, "THERMOSCREEN_SITE_KEY": ""}, "enrol", *reg, "--site-key-file", str(site_key_file),
        "--uid", UID_HEX, "--name", "Ama Mensah", "--dob", "1980-02-03", "--clinic-id", "K-1", "--actor", "nurse-a",
    )  # fmt: skip
    ref = make_patient_ref(bytes.fromhex("04a22b19"), site_key)
    assert enrol["patient_ref"] == ref

    listed = _ok(env, "list", *reg)
    assert listed["patients"] == [{"patient_ref": ref, "enrolled_at": listed["patients"][0]["enrolled_at"]}]  # type: ignore[index]
    assert "Ama" not in json.dumps(listed)
    assert _ok(env, "show", ref, *reg)["patient_ref"] == ref
    named = _ok(env, "list", *reg, "--names", "--reason", "monthly recall")
    assert named["patients"][0]["name"] == "Ama Mensah"  # type: ignore[index]

    found = _ok(env, "lookup", ref, *reg, "--reason", "flagged screening follow-up", "--actor", "dr-b")
    assert (found["name"], found["date_of_birth"], found["clinic_id"]) == ("Ama Mensah", "1980-02-03", "K-1")

    audit = _ok(env, "audit", "--verify", *reg)
    assert audit["lines"] == 3
    log = Path(str(audit["audit"])).read_text().splitlines()
    assert [json.loads(line)["action"] for line in log] == ["enrol", "list-names", "lookup"]
    assert json.loads(log[2])["reason"] == "flagged screening follow-up"
    assert "Ama" not in "".join(log)


def test_errors_are_one_line_with_exit_2(env: dict[str, str], registry_path: Path) -> None:
    reg = ["--registry", str(registry_path)]
    enrol = ["enrol", *reg, "--name", "Ama", "--dob", "1980-02-03", "--clinic-id", "K-1"]
    _one_line_error(_cli(env, *enrol, "--uid", "04a22b"), "expected 4, 7 or 10")
    _one_line_error(_cli({**env, "THERMOSCREEN_REGISTRY_KEY": ""}, *enrol, "--uid", UID_HEX), "no registry key")
    _one_line_error(_cli(env, "list", *reg), "no registry at")
    assert _cli(env, *enrol, "--uid", UID_HEX).returncode == 0
    _one_line_error(_cli(env, *enrol, "--uid", UID_HEX.upper()), "card already enrolled as")
    _one_line_error(_cli(env, "lookup", "ffffffffffffffff", *reg, "--reason", "x"), "no patient ffffffffffffffff")
    _one_line_error(_cli(env, "lookup", "nothex", *reg, "--reason", "x"), "invalid patient_ref")
    _one_line_error(_cli(env, "list", *reg, "--names"), "--names needs --reason")


def test_audit_verify_exits_2_naming_the_first_bad_line(env: dict[str, str], registry_path: Path) -> None:
    reg = ["--registry", str(registry_path)]
    assert (
        _cli(env, "enrol", *reg, "--uid", UID_HEX, "--name", "A", "--dob", "1980-02-03", "--clinic-id", "K").returncode
        == 0
    )
    ref = make_patient_ref(bytes.fromhex(UID_HEX.replace(":", "")), bytes.fromhex(env["THERMOSCREEN_SITE_KEY"]))
    for n in range(2):
        assert _cli(env, "lookup", ref, *reg, "--reason", f"r{n}").returncode == 0
    log = Path(str(registry_path) + ".audit.jsonl")
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[2])
    _one_line_error(_cli(env, "audit", "--verify", *reg), "line 2: chain broken")
