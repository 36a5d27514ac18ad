"""`thermoscreen broker ...`: what init writes, account management, JSON on stdout, one-line errors.

Most calls go through `thermoscreen.cli.main` in-process (same parser, same error handling as
the console script, much faster); one test runs the real console script end to end.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509

from broker.acl import render_acl
from broker.certificates import certificate_names
from broker.files import BrokerFiles
from broker.passwords import parse_password_file, verify_password
from broker.provisioning import Credentials, add_device, add_service, init_broker, list_accounts, remove_account
from contract import topics as t
from contract.messages import DeviceState, DeviceStatus, encode_message
from devtools.local_mosquitto import RELOAD_LOG_LINE, LocalMosquitto, free_port
from devtools.secure_broker import SecureBroker, connect_outcome
from tests.mqtt_helpers import Collector, subscribe_and_wait
from thermoscreen.cli import main
from transport.connection import MqttSettings

SECRET = 0o600


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["broker", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_writes_a_complete_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "b"
    code, out, err = _cli(capsys, "init", "--dir", str(root), "--hostname", "mosquitto", "--json")
    assert code == 0
    summary = json.loads(out)
    files = BrokerFiles(root.resolve())
    assert summary["config"] == str(files.config)
    for path in files.managed():
        assert path.is_file(), path
    for secret in (files.site_key, files.server_key, files.ca_key, files.passwords, files.acl, files.registry):
        assert _mode(secret) == SECRET, secret
    assert _mode(files.root) == 0o700
    assert len(bytes.fromhex(files.site_key.read_text().strip())) == 32
    assert files.passwords.read_text() == ""
    assert "mosquitto" in certificate_names(files.server_cert.read_bytes())
    config = files.config.read_text()
    assert "allow_anonymous false" in config
    assert "listener 1883 127.0.0.1\n" in config
    assert "listener 8883\n" in config  # every interface by default
    assert "set_tcp_nodelay true" in config and "max_queued_messages 1000000" in config
    assert config.count("use_username_as_clientid true") == 2
    assert f"password_file {files.passwords}" in config and f"acl_file {files.acl}" in config
    assert "mosquitto -c" in err


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "b"
    assert _cli(capsys, "init", "--dir", str(root))[0] == 0
    add_device(root, "pi-1")
    site_key = (root / "site.key").read_text()
    ca = (root / "ca.crt").read_bytes()
    code, out, err = _cli(capsys, "init", "--dir", str(root))
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and "--force" in err
    assert (root / "ca.crt").read_bytes() == ca and [a.username for a in list_accounts(root)] == ["pi-1"]

    assert _cli(capsys, "init", "--dir", str(root), "--force")[0] == 0
    assert (root / "ca.crt").read_bytes() != ca
    assert list_accounts(root) == []
    assert (root / "site.key").read_text() == site_key  # pseudonyms stay linkable
    assert _cli(capsys, "init", "--dir", str(root), "--force", "--new-site-key")[0] == 0
    assert (root / "site.key").read_text() != site_key


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "1883", "--tls-port", "1883"], "must differ"),
        (["--tls-port", "70000"], "out of range"),
        (["--hostname", "not a host"], "hostname"),
        (["--user", "no-such-user-xyz"], "no such user"),
    ],
)
def test_init_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, out, err = _cli(capsys, "init", "--dir", str(tmp_path / "b"), *args)
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_add_device_prints_credentials_once_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "b"
    init_broker(root, tls_port=18883, hostnames=["broker.lan"])
    code, out, err = _cli(capsys, "add-device", "pi-7", "--dir", str(root))
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    creds = json.loads(out)
    assert creds["username"] == "pi-7" and creds["role"] == "device"
    assert creds["ca"] == str(root.resolve() / "ca.crt")
    assert creds["url"] == "mqtts://broker.lan:18883"
    assert creds["site_key_file"] == str(root.resolve() / "site.key")
    assert creds["password"] not in err and "HUP" in err
    stored = parse_password_file((root / "passwords").read_text())
    assert verify_password(creds["password"], stored["pi-7"])
    assert creds["password"] not in (root / "passwords").read_text()

    code, out, err = _cli(capsys, "add-device", "pi-7", "--dir", str(root))
    assert (code, out) == (2, "") and "--rotate" in err
    code, out, _ = _cli(capsys, "add-device", "pi-7", "--dir", str(root), "--rotate")
    rotated = json.loads(out)["password"]
    stored = parse_password_file((root / "passwords").read_text())
    assert verify_password(rotated, stored["pi-7"]) and not verify_password(creds["password"], stored["pi-7"])


def test_add_service_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "b"
    init_broker(root)
    code, out, _ = _cli(capsys, "add-service", "inference", "gpu-1", "--dir", str(root))
    creds = json.loads(out)
    assert code == 0
    assert (creds["username"], creds["role"], creds["node_id"]) == ("inference.gpu-1", "inference", "gpu-1")
    assert "site_key_file" not in creds
    assert _cli(capsys, "add-service", "bridge", "main", "--dir", str(root))[0] == 0
    code, out, err = _cli(capsys, "add-service", "admin", "gpu-1", "--dir", str(root))
    assert code == 2 and "already used by inference.gpu-1" in err
    code, out, _ = _cli(capsys, "list", "--dir", str(root), "--json")
    listed = json.loads(out)["accounts"]
    assert [(a["username"], a["role"]) for a in listed] == [("bridge.main", "bridge"), ("inference.gpu-1", "inference")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["add-device", "Pi_1"], "invalid device id"),
        (["add-device", "nodes"], "reserved"),
        (["add-service", "inference", "gpu.1"], "invalid node id"),
        (["add-service", "inference", "bridge"], "another role's name"),
        (["remove", "ghost"], "no account 'ghost'"),
    ],
)
def test_account_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    root = tmp_path / "b"
    init_broker(root)
    code, out, err = _cli(capsys, *args, "--dir", str(root))
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_commands_on_a_directory_without_setup_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "add-device", "pi-1", "--dir", str(tmp_path))
    assert (code, out) == (2, "")
    assert "not a broker directory" in err and "broker init" in err


def test_acl_is_regenerated_from_the_registry(tmp_path: Path) -> None:
    root = tmp_path / "b"
    init_broker(root)
    add_device(root, "pi-1")
    add_service(root, "inference", "gpu-1")
    add_service(root, "admin", "ops")
    acl = (root / "acl").read_text()
    assert "pattern write thermo/v1/%u/frame" in acl
    assert "pi-1" not in acl  # devices are covered by the patterns
    assert "user inference.gpu-1\ntopic read thermo/v1/+/frame\n" in acl
    assert f"topic write {t.ADMIN_MODEL_TOPIC}" in acl.split("user admin.ops", 1)[1]
    assert acl.count(f"topic write {t.ADMIN_MODEL_TOPIC}") == 1
    remove_account(root, "inference.gpu-1")
    acl = (root / "acl").read_text()
    assert "inference.gpu-1" not in acl
    assert acl == render_acl(list_accounts(root))
    assert "inference.gpu-1" not in (root / "passwords").read_text()


def test_concurrent_adds_lose_nothing(tmp_path: Path) -> None:
    """Two provisioning processes at once: the directory lock serialises them."""
    root = tmp_path / "b"
    init_broker(root)
    script = (
        "import sys; from pathlib import Path; from broker.provisioning import add_device\n"
        "for i in range(10): add_device(Path(sys.argv[1]), f'{sys.argv[2]}-{i}')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), prefix]) for prefix in ("a", "b")]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert len(list_accounts(root)) == 20
    assert len(parse_password_file((root / "passwords").read_text())) == 20


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """init, add-device, then plain `mosquitto -c DIR/mosquitto.conf`; connect with what was printed."""
    root, port, tls_port = tmp_path / "b", free_port(), free_port()
    exe = Path(sys.executable).with_name("thermoscreen")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "thermoscreen"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "broker", *args, "--dir", str(root)], capture_output=True, text=True, timeout=60, check=False
        )

    init = cli("init", "--port", str(port), "--tls-port", str(tls_port), "--bind", "127.0.0.1")
    assert init.returncode == 0, init.stderr
    added = cli("add-device", "pi-1")
    assert added.returncode == 0, added.stderr
    creds = json.loads(added.stdout)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with LocalMosquitto(root / "mosquitto.conf", ports=[port, tls_port], workdir=run_dir) as broker:
        settings = MqttSettings(
            url=f"mqtts://127.0.0.1:{tls_port}", username=creds["username"], ca_file=Path(creds["ca"])
        )
        assert connect_outcome(settings, creds["password"]) is None
        pid_file = root / "data" / "mosquitto.pid"
        assert int(pid_file.read_text()) == broker.pid
        reloads = broker.log_count(RELOAD_LOG_LINE)
        removed = cli("remove", "pi-1", "--reload")
        assert removed.returncode == 0, removed.stderr
        assert f"pid {broker.pid}" in removed.stderr
        broker.wait_for_log(RELOAD_LOG_LINE, reloads + 1)
        reason = connect_outcome(settings, creds["password"])
        assert reason is not None and "Not authorized" in reason
    assert os.path.exists(root / "data" / "mosquitto.db")  # persistence is on


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")
def test_init_for_another_user_lets_mosquitto_drop_root() -> None:
    """`--user mosquitto`: the broker drops root and still reads its key, passwords and ACL.

    Uses a directory directly under the system temp dir, because pytest's tmp_path sits
    below a 0700 directory that no other user can enter.
    """
    try:
        broker_user = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no 'mosquitto' user on this machine")
    with tempfile.TemporaryDirectory(prefix="thermoscreen-broker-") as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700: the broker user must be able to enter it
        root, port, tls_port = Path(tmp) / "b", free_port(), free_port()
        init_broker(root, port=port, tls_port=tls_port, tls_bind="127.0.0.1", broker_user="mosquitto")
        creds = add_device(root, "pi-1")
        files = BrokerFiles(root.resolve())
        for path in (files.server_key, files.passwords, files.acl, files.data):
            assert path.stat().st_uid == broker_user.pw_uid, path
        for path in (files.ca_key, files.site_key, files.registry):
            assert path.stat().st_uid == 0, path  # the broker never needs these
        assert "user mosquitto" in files.config.read_text()
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        with LocalMosquitto(files.config, ports=[port, tls_port], workdir=run_dir) as broker:
            assert broker.pid is not None
            assert Path(f"/proc/{broker.pid}").stat().st_uid == broker_user.pw_uid
            settings = MqttSettings(url=f"mqtts://127.0.0.1:{tls_port}", username="pi-1", ca_file=files.ca_cert)
            assert connect_outcome(settings, creds.password) is None
            reason = connect_outcome(settings, "wrong")
    assert reason is not None and "Not authorized" in reason, reason


def test_renew_cert_adds_names_under_the_same_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "b"
    init_broker(root, hostnames=["mosquitto"])
    ca_before = (root / "ca.crt").read_bytes()
    cert_before = (root / "server.crt").read_bytes()
    code, out, err = _cli(capsys, "renew-cert", "--dir", str(root), "--hostname", "broker.lan")
    assert (code, out) == (0, "") and "restart" in err
    assert (root / "ca.crt").read_bytes() == ca_before
    cert = (root / "server.crt").read_bytes()
    assert cert != cert_before
    assert {"mosquitto", "broker.lan", "localhost"} <= set(certificate_names(cert))
    x509.load_pem_x509_certificate(cert).verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))
    assert _mode(root / "server.key") == SECRET
    (root / "ca.key").unlink()  # moved offline, as docs/security.md suggests
    code, _, err = _cli(capsys, "renew-cert", "--dir", str(root))
    assert code == 2 and "ca.key" in err and len(err.strip().splitlines()) == 1


def test_conf_dir_as_rewrites_paths_for_a_container(tmp_path: Path) -> None:
    files = init_broker(tmp_path / "b", conf_dir=Path("/mosquitto/config"))
    config = files.config.read_text()
    assert "password_file /mosquitto/config/passwords\n" in config
    assert "keyfile /mosquitto/config/server.key\n" in config
    assert "persistence_location /mosquitto/config/data/\n" in config
    assert str(files.root) not in config


def _retained(broker: SecureBroker, creds: Credentials, topic_filter: str) -> dict[str, bytes]:
    """What a brand-new subscriber gets replayed on `topic_filter` (retained messages only)."""
    got = Collector()
    conn = broker.connect(creds)
    try:
        subscribe_and_wait(conn, topic_filter, got)
        time.sleep(0.5)  # retained messages arrive right after the SUBACK; nothing else is published
    finally:
        conn.stop()
    return {m.topic: m.payload for m in got.messages if m.retain}


def test_remove_with_reload_clears_the_revoked_devices_retained_messages(
    secure_broker: SecureBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    device = secure_broker.add_device("pi-1")
    other = secure_broker.add_device("pi-2")
    admin = secure_broker.add_service("admin", "ops")
    for creds in (device, other):
        conn = secure_broker.connect(creds)
        status = encode_message(DeviceStatus(state=DeviceState.ONLINE))
        assert conn.publish(t.status_topic(creds.username), status, qos=1, retain=True).wait(5)
        # A hostile device can also plant a retained frame for every later subscriber.
        assert conn.publish(t.frame_topic(creds.username), b"planted", qos=1, retain=True).wait(5)
        conn.stop()
    before = _retained(secure_broker, admin, "thermo/v1/#")
    assert {t.status_topic("pi-1"), t.frame_topic("pi-1"), t.status_topic("pi-2")} <= set(before)

    code, out, err = _cli(capsys, "remove", "pi-1", "--dir", str(secure_broker.dir), "--reload")
    assert (code, out) == (0, ""), err
    assert "cleared retained messages" in err and t.status_topic("pi-1") in err
    after = _retained(secure_broker, admin, "thermo/v1/#")
    assert not [topic for topic in after if topic.startswith("thermo/v1/pi-1/")], after
    assert t.status_topic("pi-2") in after and t.frame_topic("pi-2") in after, "other devices keep theirs"

    settings = secure_broker.settings(device)
    assert connect_outcome(settings, device.password) is not None, "the device is revoked"
    files = BrokerFiles(secure_broker.dir)
    assert "cleanup-" not in files.passwords.read_text() and "cleanup-" not in files.acl.read_text()
    assert [a.username for a in list_accounts(secure_broker.dir)] == ["admin.ops", "pi-2"]


def test_remove_without_reload_says_retained_messages_stay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "b"
    init_broker(root)
    add_device(root, "pi-1")
    code, _, err = _cli(capsys, "remove", "pi-1", "--dir", str(root))
    assert code == 0 and "--reload" in err and "retained" in err
    assert list_accounts(root) == []


def test_remove_with_reload_but_no_broker_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "b"
    init_broker(root)
    add_device(root, "pi-1")
    code, out, err = _cli(capsys, "remove", "pi-1", "--dir", str(root), "--reload")
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and "removed, but its retained messages were not cleared" in err
    files = BrokerFiles(root.resolve())
    assert list_accounts(root) == [] and "cleanup-" not in files.passwords.read_text()
