"""`thermoscreen sensor` and `thermoscreen bench sensor` as processes: config errors, signals, restarts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.ids import LEGACY_INCARNATION, make_patient_ref
from contract.messages import DeviceState, RfidEventKind, SessionEndReason
from devtools.local_mosquitto import LocalMosquitto, free_port
from sensor_node.config import load_config
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait
from tests.sensor_node.conftest import events_of, frames_of, statuses_of, unique_by_seq, wait_until, went_offline

REPO = Path(__file__).resolve().parents[2]
SITE_KEY_HEX = bytes(range(100, 132)).hex()
UID_HEX = "04a1b2c3"

FAST_TOML = """
[device]
id = "pi-1"
[source]
rate_hz = 25.0
[rfid]
poll_interval_s = 0.02
gone_after_s = 0.5
emulated_tap_s = 0.1
[spool]
synchronous = "normal"
flush_timeout_s = 5.0
[status]
interval_s = 0.5
[mqtt]
reconnect_min_s = 0.05
reconnect_max_s = 0.3
"""


def sensor_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, THERMOSCREEN_SITE_KEY=SITE_KEY_HEX, XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("THERMOSCREEN_DEBUG", None)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )


def start_sensor(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "thermoscreen", "-vv", "sensor", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=REPO,
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """The dispatcher's own error handling, without a process start (config errors happen before any I/O)."""
    from thermoscreen.cli import main

    code = main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def test_malformed_config_file_is_one_line_and_exit_2_in_a_process(tmp_path: Path) -> None:
    for content, needle in (("[source\nkind = 1", "not valid TOML"), ("[spool]\nwindo = 3", "spool.windo")):
        config = write(tmp_path / "sensor.toml", content)
        out = run_cli(["sensor", "--config", str(config), "--duration", "1"], sensor_env(tmp_path))
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0].startswith(f"thermoscreen sensor: error: {config}: ") and needle in lines[0]
    assert not (tmp_path / "state").exists()  # nothing was created


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("[source]\nkind = 'thermal'", ["source.kind"]),
        ("[source]\nrate_hz = 'fast'", ["source.rate_hz"]),
        ("[source]\nkind = 'emulated'\nrate_hz = 50", ["exceeds the MLX90640"]),
        ("[spool]\nwindo = 3", ["spool.windo", "Extra inputs"]),
        ("[device]\nid = 'Pi 1'", ["device.id", "invalid device id"]),
        ("[mqtt]\nurl = 'http://x'", ["mqtt.url", "mqtt://"]),
        ("[source]\nkind = 'replay'", ["source.replay.path is required"]),
    ],
)
def test_malformed_config_values_name_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needles: list[str]
) -> None:
    config = write(tmp_path / "sensor.toml", content)
    code, lines = run_in_process(["sensor", "--config", str(config), "--duration", "1"], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"thermoscreen sensor: error: {config}: ")
    for needle in needles:
        assert needle in lines[0]


def test_missing_config_bad_cards_and_missing_hardware_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERMOSCREEN_SITE_KEY", SITE_KEY_HEX)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cases = [
        (["--config", str(tmp_path / "nope.toml")], "config file not found"),
        (["--cards", str(write(tmp_path / "cards.txt", "04a1b2c3\nnope\n"))], "cards.txt:2: card UID is not hex"),
        (
            ["--rfid", "emulated", "--cards", str(write(tmp_path / "five.txt", "04112233445566\n0102030405\n"))],
            "five.txt:2: card UID has 5 bytes, expected 4, 7 or 10",
        ),
        (["--source", "replay", "--replay", str(tmp_path / "none.npz")], "replay file not found"),
        (["--source", "mlx90640", "--rfid", "none"], "cannot open the I2C bus for the MLX90640"),
        (["--rfid", "mfrc522"], "the MFRC522"),
        (["--duration", "0"], "--duration must be positive"),
    ]
    for args, needle in cases:
        code, lines = run_in_process(["sensor", "--broker", "mqtt://127.0.0.1:1", "--duration", "1", *args], capsys)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("thermoscreen sensor: error: ") and needle in lines[0]
    monkeypatch.delenv("THERMOSCREEN_SITE_KEY")
    code, lines = run_in_process(["sensor", "--rfid", "mfrc522", "--duration", "1"], capsys)
    assert code == 2 and "no site key" in lines[-1]


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "sensor_node" / "sensor.example.toml")
    assert config.source.kind.value == "mlx90640" and config.mqtt.tls and config.mqtt.username == "pi-1"
    assert config.refresh_hz == 4.0


def test_demo_command_line_without_config(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    sub = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/pi-1/+", got)
    cards = write(tmp_path / "cards.txt", f"# demo\n{UID_HEX} 0\n{UID_HEX} 1.0\n")
    args = ["--broker", mosquitto.url, "--device-id", "pi-1", "--source", "synthetic", "--rfid", "scripted"]
    out = run_cli(["sensor", *args, "--cards", str(cards), "--rate", "10", "--duration", "2"], sensor_env(tmp_path))
    assert out.returncode == 0, out.stderr
    messages = got.wait_until(lambda msgs: len(events_of(msgs)) >= 2, 10, "both session events")
    sub.stop()
    start, end = events_of(messages)
    assert end.reason is SessionEndReason.CARD
    assert start.patient_ref == make_patient_ref(bytes.fromhex(UID_HEX), bytes.fromhex(SITE_KEY_HEX))
    assert end.frame_count is not None and len(unique_by_seq(frames_of(messages))) == end.frame_count > 0
    assert (tmp_path / "state" / "thermoscreen" / "sensor-pi-1.spool.sqlite").exists()
    assert "A screening aid, not a diagnosis" in out.stderr


def test_sigterm_ends_the_session_flushes_and_exits_0(
    mosquitto: LocalMosquitto, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The whole emulated device: real adafruit driver on the emulated MLX90640, the real MFRC522 driver."""
    sub = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/pi-1/+", got)
    config = write(tmp_path / "sensor.toml", FAST_TOML)
    cards = write(tmp_path / "cards.txt", f"{UID_HEX}\n")
    log = tmp_path / "sensor.log"
    args = ["--config", str(config), "--broker", mosquitto.url, "--source", "emulated", "--rfid", "emulated"]
    proc = start_sensor([*args, "--rate", "8", "--cards", str(cards)], sensor_env(tmp_path), log)
    processes.append(proc)
    got.wait_until(lambda msgs: len(frames_of(msgs)) >= 6, 20, "frames from the emulated device")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()
    messages = got.wait_until(lambda msgs: len(events_of(msgs)) >= 2, 10, "session_end")
    got.wait_until(went_offline, 10, "offline status")
    sub.stop()
    start, end = events_of(messages)
    assert end.event is RfidEventKind.SESSION_END and end.reason is SessionEndReason.SHUTDOWN
    frames = unique_by_seq(frames_of(messages))
    assert len(frames) == end.frame_count and [f.seq for f in frames] == list(range(start.seq + 1, end.seq))
    stderr = log.read_text()
    assert "started for patient_ref" in stderr  # -vv logs talk about the session, by pseudonym
    uid = bytes.fromhex(UID_HEX)
    simple_id = str(int.from_bytes(uid + bytes([uid[0] ^ uid[1] ^ uid[2] ^ uid[3]]), "big"))
    for spelling in (UID_HEX, UID_HEX.upper(), simple_id):
        assert spelling not in stderr


def spool_rows(path: Path) -> list[tuple[int, str]]:
    """(seq, kind) of another process's spool; empty while it is still being created."""
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path) as db:
            return [(int(seq), str(kind)) for seq, kind in db.execute("SELECT seq, kind FROM outbox ORDER BY id")]
    except sqlite3.OperationalError:  # the schema is not there yet
        return []


def test_sigkill_then_restart_sends_what_was_spooled(
    mosquitto: LocalMosquitto, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = sensor_env(tmp_path)
    config = write(tmp_path / "sensor.toml", FAST_TOML)
    spool = tmp_path / "spool.sqlite"
    dead_broker = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens: everything stays spooled
    cards = write(tmp_path / "cards.txt", f"{UID_HEX}\n")
    first = start_sensor(
        ["--config", str(config), "--broker", dead_broker, "--spool", str(spool), "--cards", str(cards)],
        env,
        tmp_path / "first.log",
    )
    processes.append(first)
    wait_until(lambda: len(spool_rows(spool)) >= 15, 20, "15 spooled messages")
    first.kill()  # SIGKILL: no goodbye, no flush
    first.wait(10)
    spooled = spool_rows(spool)
    assert spooled[0] == (0, "event") and all(kind == "frame" for _, kind in spooled[1:])

    sub = connect(mosquitto.url)
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/pi-1/+", got)
    second_cards = write(tmp_path / "cards2.txt", "0a0b0c0d 0.5\n")
    second = start_sensor(
        ["--config", str(config), "--broker", mosquitto.url, "--spool", str(spool), "--cards", str(second_cards)],
        env,
        tmp_path / "second.log",
    )
    processes.append(second)
    wanted = {seq for seq, _ in spooled}
    got.wait_until(
        lambda msgs: wanted <= {f.seq for f in frames_of(msgs)} | {e.seq for e in events_of(msgs)}, 20, "spooled"
    )
    got.wait_until(lambda msgs: len(events_of(msgs)) >= 2, 10, "the second run's session")
    second.kill()  # vanishing while connected: the broker publishes the last will
    second.wait(10)
    got.wait_until(went_offline, 10, "last will")
    sub.stop()

    first_start, second_start = events_of(got.messages)[:2]
    old_frames = [f for f in frames_of(got.messages) if f.session_id == first_start.session_id]
    assert {f.seq for f in old_frames} >= {seq for seq, kind in spooled if kind == "frame"}
    assert all(f.patient_ref == first_start.patient_ref for f in old_frames)
    assert second_start.seq > max(wanted)  # the sequence continues across the crash
    assert second_start.patient_ref != first_start.patient_ref
    online = [s for s in statuses_of(got.messages) if s.state is DeviceState.ONLINE]
    assert online and online[0].spool_depth is not None


def test_bench_prints_one_json_object(tmp_path: Path, local_servers: None) -> None:
    out = run_cli(["bench", "sensor", "--json", "--duration", "0.6"], sensor_env(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # exactly one object, nothing else on stdout
    assert result["imports_tensorflow"] is False
    assert result["frames_per_s"] > 0 and result["cpu_ms_per_frame"] > 0 and result["rss_mb"] > 10
    assert result["max_frames_per_s"] > result["frames_per_s"]
    assert set(result["phases"]) == {"8hz", "max", "sustain"}
    assert "phase 8hz" in out.stderr
    off, on = result["edge"]["off"], result["edge"]["on"]
    assert (off["imports_litert"], on["imports_litert"]) == (False, True)  # each mode in its own process
    assert off["frames_scored"] == 0 and on["frames_scored"] >= 1 and on["frames_unscored"] == 0
    assert result["rss_mb_edge_on"] == on["rss_mb"] > result["rss_mb_edge_off"] == off["rss_mb"] > 10
    assert result["cpu_ms_per_frame_edge_on"] > 0 and result["cpu_ms_per_frame_edge_off"] > 0
    assert result["provisional_after_session_end_ms"] == on["provisional_after_session_end_ms"] > 0
    scoring = on["scoring"]
    assert scoring["batch32_cpu_ms_per_frame"] > 0 and scoring["end_batch_frames"] == 2400
    assert "edge mode on" in out.stderr and "provisional on-device result" in out.stderr


def test_sensor_modules_never_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import thermoscreen.cli, sensor_node.cli, sensor_node.node, sensor_node.service, sensor_node.sources\n"
        "import sensor_node.mlx_source, sensor_node.rfid, devtools.bench.sensor, sensor_node.spool, sensor_node.edge\n"
        "import sensor_node.emulation.mlx90640_chip, sensor_node.emulation.mfrc522_chip, adafruit_mlx90640\n"
        "thermoscreen.cli.build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', 'tf_keras'})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "[]"


def _one_run(
    url: str, args: list[str], env: dict[str, str], log: Path, processes: list[subprocess.Popen[bytes]]
) -> Collector:
    """Run a real sensor process until it sent a session with 5 frames, SIGTERM it, return what arrived."""
    sub = connect(url)
    got = Collector()
    subscribe_and_wait(sub, "thermo/v1/pi-1/+", got)
    proc = start_sensor(args, env, log)
    processes.append(proc)
    got.wait_until(lambda msgs: len(frames_of(msgs)) >= 5, 20, "frames")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()
    got.wait_until(lambda msgs: len(events_of(msgs)) >= 2, 10, "session_end")
    got.wait_until(went_offline, 10, "offline status")
    sub.stop()
    return got


def test_reimaged_device_gets_a_new_incarnation_a_restart_keeps_it(
    mosquitto: LocalMosquitto, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Issue 12.2: seq restarts at 0 only with a new spool, and then the incarnation is new too."""
    env = sensor_env(tmp_path)
    config = write(tmp_path / "sensor.toml", FAST_TOML)
    cards = write(tmp_path / "cards.txt", f"{UID_HEX}\n")
    spool = tmp_path / "device" / "spool.sqlite"
    args = ["--config", str(config), "--broker", mosquitto.url, "--spool", str(spool), "--cards", str(cards)]

    def run(name: str) -> tuple[str, list[int], list[int]]:
        messages = _one_run(mosquitto.url, args, env, tmp_path / f"{name}.log", processes).messages
        frames, events = frames_of(messages), events_of(messages)
        statuses = statuses_of(messages)
        incarnations = {f.incarnation for f in frames} | {e.incarnation for e in events}
        incarnations |= {s.incarnation for s in statuses if s.state is DeviceState.ONLINE}
        assert len(incarnations) == 1, f"{name}: one incarnation on every frame, event and status"
        (incarnation,) = incarnations
        assert statuses[-1].incarnation == incarnation  # the retained offline status names it too
        assert f"(incarnation {incarnation})" in (tmp_path / f"{name}.log").read_text()
        return incarnation, [f.seq for f in frames], [e.seq for e in events]

    first, first_frames, first_events = run("first")
    assert first != LEGACY_INCARNATION and first_events[0] == 0
    again, _again_frames, again_events = run("restart")  # same spool: same incarnation, seq continues
    assert again == first and again_events[0] > max(first_frames + first_events)
    shutil.rmtree(spool.parent)  # re-image: the spool is gone
    fresh, fresh_frames, fresh_events = run("reimaged")
    assert fresh not in (first, LEGACY_INCARNATION)
    assert fresh_events[0] == 0 and min(fresh_frames) == 1  # seq starts again at 0 ...
    assert set(fresh_frames) & set(first_frames)  # ... so (device, seq) collides; the incarnation tells them apart
