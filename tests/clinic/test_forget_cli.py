"""`thermoscreen patients forget` as a process, without servers: bad input is refused before anything
is erased, the text receipt names each store, `--help` works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from devtools.managed_process import free_port
from tests.clinic.erasure_helpers import fill_archive, sessions_of


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", "patients", *args],
        capture_output=True, text=True, env=env or {**os.environ, "THERMOSCREEN_LOG_FORMAT": "text"},
        timeout=60, check=False,
    )  # fmt: skip


def _config(tmp_path: Path, **sections: dict[str, object]) -> Path:
    raw: dict[str, dict[str, object]] = {
        "queue": {"path": str(tmp_path / "b" / "queue.sqlite")},
        "archive": {"path": str(tmp_path / "b" / "archive.sqlite")},
        "erasure": {"tombstones": str(tmp_path / "b" / "erased.txt")},
    }
    raw.update(sections)
    path = tmp_path / "bridge.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def _enrol(registry: Path, key: bytes, site_key: bytes) -> str:
    env = {**os.environ, "THERMOSCREEN_REGISTRY_KEY": key.hex(), "THERMOSCREEN_SITE_KEY": site_key.hex()}
    out = _cli("enrol", "--registry", str(registry), "--uid", "04a22b19", "--name", "A", "--dob", "1980-01-01",
               "--clinic-id", "K-1", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def test_forget_help_works() -> None:
    out = _cli("forget", "--help")
    assert out.returncode == 0 and "--bridge-config" in out.stdout and "--reports-dir" in out.stdout
    assert "forget" in _cli("--help").stdout


def test_bad_input_is_refused_before_anything_is_erased(tmp_path: Path, registry_key: bytes, site_key: bytes) -> None:
    config = _config(tmp_path)
    registry = tmp_path / "clinic" / "patients.sqlite"
    ref = _enrol(registry, registry_key, site_key)
    fill_archive(tmp_path / "b" / "archive.sqlite", sessions_of(ref, "cli-a", 1))
    common = ["--reason", "request", "--bridge-config", str(config), "--reports-dir", str(tmp_path / "r")]
    cases = [
        (["forget", "xyz", "--registry", str(registry), *common], "patient_ref"),
        (["forget", ref, "--registry", str(tmp_path / "nope.sqlite"), *common], "no registry at"),
        (
            [
                "forget",
                ref,
                "--registry",
                str(registry),
                *common[:2],
                "--bridge-config",
                str(tmp_path / "no.toml"),
                "--reports-dir",
                "r",
            ],
            "no.toml",
        ),
    ]
    for args, needle in cases:
        out = _cli(*args)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
        assert out.stdout == ""
    assert not (tmp_path / "b" / "erased.txt").exists()
    assert _cli("show", ref, "--registry", str(registry)).returncode == 0


def test_the_text_receipt_names_every_store(tmp_path: Path, registry_key: bytes, site_key: bytes) -> None:
    config = _config(tmp_path)
    registry = tmp_path / "clinic" / "patients.sqlite"
    ref = _enrol(registry, registry_key, site_key)
    fill_archive(tmp_path / "b" / "archive.sqlite", sessions_of(ref, "cli-b", 2))

    out = _cli("forget", ref, "--registry", str(registry), "--reason", "request", "--bridge-config", str(config),
               "--reports-dir", str(tmp_path / "r"))  # fmt: skip

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"patient {ref}: erased (2 session(s) found)"
    assert any(line.split()[:3] == ["archive", "erased", "sessions=2"] for line in lines)
    assert any(line.split()[:2] == ["influx", "not"] for line in lines)
    assert any(line.split()[:3] == ["registry", "erased", "patients=1"] for line in lines)
    assert "screening aid, not a diagnosis" in out.stdout


@pytest.mark.slow  # the Firestore client's bounded retries take their 20 s
def test_an_unreachable_firestore_is_named_and_the_rest_erased(
    tmp_path: Path, registry_key: bytes, site_key: bytes
) -> None:
    config = _config(tmp_path, firestore={"enabled": True, "project_id": "demo-unreachable"})
    registry = tmp_path / "clinic" / "patients.sqlite"
    ref = _enrol(registry, registry_key, site_key)
    fill_archive(tmp_path / "b" / "archive.sqlite", sessions_of(ref, "cli-c", 1))
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}", "THERMOSCREEN_LOG_FORMAT": "text"}

    out = _cli("forget", ref, "--registry", str(registry), "--reason", "request", "--bridge-config", str(config),
               "--reports-dir", str(tmp_path / "r"), "--json", env=env)  # fmt: skip

    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("thermoscreen patients forget: incomplete: firestore: ")
    receipt = json.loads(out.stdout)
    assert receipt["failed"] == ["firestore"] and receipt["stores"]["archive"]["removed"]["sessions"] == 1
    assert receipt["stores"]["registry"]["status"] == "kept"


def test_several_bridges_each_queue_and_the_shared_archive_are_erased(
    tmp_path: Path, registry_key: bytes, site_key: bytes
) -> None:
    from cloud_bridge.durable_queue import DurableQueue
    from tests.clinic.erasure_helpers import queue_items

    registry = tmp_path / "clinic" / "patients.sqlite"
    ref = _enrol(registry, registry_key, site_key)
    shared = {"archive": {"path": str(tmp_path / "archive.sqlite")}, "erasure": {"tombstones": str(tmp_path / "e.txt")}}
    configs: list[Path] = []
    for name in ("a", "b"):
        queue_path = tmp_path / name / "queue.sqlite"
        queue_path.parent.mkdir()
        queue = DurableQueue(queue_path, ["archive"])
        queue.append(queue_items(sessions_of(ref, f"cli-{name}", 1)[0]))  # each bridge took some of her messages
        queue.close()
        path = tmp_path / f"{name}.toml"
        path.write_text(tomli_w.dumps({"queue": {"path": str(queue_path)}, **shared}))
        configs += [Path("--bridge-config"), path]
    fill_archive(tmp_path / "archive.sqlite", sessions_of(ref, "cli-a", 1))

    out = _cli("forget", ref, "--registry", str(registry), "--reason", "request", *map(str, configs),
               "--reports-dir", str(tmp_path / "r"), "--json")  # fmt: skip

    assert out.returncode == 0, out.stderr
    receipt = json.loads(out.stdout)
    assert receipt["complete"] and {"queue-1", "queue-2", "archive"} <= set(receipt["stores"])
    for name in ("queue-1", "queue-2"):
        assert receipt["stores"][name]["removed"]["items"] > 0
    for name in ("a", "b"):
        raw = (tmp_path / name / "queue.sqlite").read_bytes()
        assert ref.encode() not in raw and bytes.fromhex(ref) not in raw
