"""docker-compose.yml, the Dockerfiles and the container scripts, checked without a Docker engine.

No Docker engine runs on this machine (or in CI), so the images are never built here. What is
checked for real: `docker compose config` / `docker-compose config` validates the file; the
provisioning files agree with the dashboards and the compose mounts; the config templates the
containers render are valid configs for the real components; and the two container scripts run
here as they would in the containers: broker-init.sh provisions a real broker directory that a
real Mosquitto serves over TLS, and claim-account.sh gives each replica its own account, which
really logs in, publishes under its node id, and is released when the replica exits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.influxql import PROVISIONED_DATASOURCE_UID
from devtools.local_mosquitto import find_mosquitto, free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKER_DIR = REPO_ROOT / "docker"
SECRETS = {
    "INFLUX_TOKEN": "t0ken-0123456789abcdef",
    "INFLUX_ADMIN_PASSWORD": "pw-influx-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "pw-grafana-0123456789",
}
DEVICES = ("device-1", "device-2")


def _compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or Debian's `docker-compose`, whichever works here."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy and subprocess.run([legacy, "version"], capture_output=True, check=False).returncode == 0:
        return [legacy]
    return None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None, reason="neither `docker compose` nor `docker-compose` is installed (scripts/system-deps.sh)"
)


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [*COMPOSE, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, **env},
        cwd=REPO_ROOT / "docker",  # away from any local .env in the repo root
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    if COMPOSE is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (scripts/system-deps.sh)")
    out = compose_config(SECRETS)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = yaml.safe_load(out.stdout)
    return data


@needs_compose
def test_compose_file_validates_and_has_every_service(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    expected = {"preflight", "broker-init", "mosquitto", "influxdb", "grafana", "bridge", "inference", *DEVICES}
    assert set(services) == expected
    assert services["mosquitto"]["depends_on"]["broker-init"]["condition"] == "service_completed_successfully"
    assert services["bridge"]["depends_on"]["influxdb"]["condition"] == "service_healthy"
    assert services["bridge"]["environment"]["INFLUX_TOKEN"] == SECRETS["INFLUX_TOKEN"]
    influx = services["influxdb"]["environment"]
    assert influx["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == SECRETS["INFLUX_TOKEN"]
    assert influx["DOCKER_INFLUXDB_INIT_BUCKET"] == services["grafana"]["environment"]["INFLUX_BUCKET"]


@needs_compose
def test_inference_can_scale_and_clients_expose_no_port(resolved: dict[str, Any]) -> None:
    """`--scale inference=3` needs no fixed container name and no host port on the scaled services."""
    for name in ("inference", *DEVICES):
        service = resolved["services"][name]
        assert "container_name" not in service
        assert "ports" not in service
        mounts = [str(v) for v in service["volumes"]]
        assert any("/run/thermoscreen/account:ro" in m for m in mounts), mounts


@needs_compose
def test_missing_secret_is_refused_with_a_hint() -> None:
    out = compose_config({k: v for k, v in SECRETS.items() if k != "INFLUX_TOKEN"})
    assert out.returncode != 0
    assert "set INFLUX_TOKEN in .env" in out.stderr


@needs_compose
def test_every_service_image_and_dockerfile_exists(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if "build" in service:
            dockerfile = Path(service["build"]["context"]) / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        else:
            assert ":" in service["image"], f"{name}: pin the image tag"


@pytest.mark.parametrize(
    ("dockerfile", "extras"),
    [
        ("sensor.Dockerfile", "sensor"),
        ("inference.Dockerfile", "inference"),
        ("bridge.Dockerfile", "bridge,dashboards"),
        ("broker-init.Dockerfile", "broker"),
    ],
)
def test_each_image_installs_only_its_extras(dockerfile: str, extras: str) -> None:
    """The sensor image gets no TensorFlow and no LiteRT; only training images may have TensorFlow."""
    import tomllib

    text = (DOCKER_DIR / dockerfile).read_text()
    assert f'pip install ".[{extras}]"' in text
    assert text.count("pip install") == 1
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in extras.split(","):
        requirements += project["optional-dependencies"][extra]
    names = {r.split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in requirements}
    assert not any(n.startswith("tensorflow") for n in names), names
    if extras == "sensor":
        assert not names & {"ai-edge-litert", "rpi.gpio", "mfrc522"}, names
        # The build checks it too.
        assert "for m in ('tensorflow', 'ai_edge_litert', 'RPi', 'mfrc522') if u.find_spec(m)" in text


def test_grafana_provisioning_matches_dashboards_and_compose() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}

    datasources = yaml.safe_load((REPO_ROOT / "dashboards/provisioning/datasources/influxdb.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == PROVISIONED_DATASOURCE_UID
    assert source["type"] == "influxdb"
    for var in ("INFLUX_URL", "INFLUX_BUCKET", "INFLUX_TOKEN"):
        assert var in grafana["environment"], f"the datasource file expands ${var}"

    providers = yaml.safe_load((REPO_ROOT / "dashboards/provisioning/dashboards/thermoscreen.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert mounts[path] == "./dashboards/generated"
    assert mounts["/etc/grafana/provisioning/datasources"] == "./dashboards/provisioning/datasources"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO_ROOT / "dashboards/generated" / Path(home).relative_to(path)).is_file()


def _render(template: str, account: str) -> str:
    return (DOCKER_DIR / "config" / template).read_text().replace("@ACCOUNT@", account)


def test_config_templates_are_valid_component_configs(tmp_path: Path) -> None:
    """What claim-account.sh renders must load with each component's own config model."""
    from cloud_bridge.config import load_config as load_bridge
    from inference_node.config import load_config as load_inference
    from sensor_node.config import load_config as load_sensor

    (tmp_path / "inference.toml").write_text(_render("inference.toml.in", "infer-3"))
    inference = load_inference(tmp_path / "inference.toml")
    assert inference.node_id == "infer-3"
    assert inference.mqtt.username == "inference.infer-3"
    assert inference.mqtt.url == "mqtts://mosquitto:8883"

    (tmp_path / "bridge.toml").write_text(_render("bridge.toml.in", "bridge"))
    bridge = load_bridge(tmp_path / "bridge.toml")
    assert bridge.bridge.node_id == "bridge" and bridge.mqtt.username == "bridge.bridge"
    assert bridge.influx.enabled and bridge.influx.token_env == "INFLUX_TOKEN"
    assert not bridge.mqtt.clean_start, "the bridge keeps its persistent session defaults"

    (tmp_path / "sensor.toml").write_text(_render("sensor.toml.in", "sim-02"))
    sensor = load_sensor(tmp_path / "sensor.toml")
    assert sensor.device.id == "sim-02" and sensor.mqtt.username == "sim-02"
    assert sensor.source.kind.value == "synthetic"


def test_simulated_card_script_parses() -> None:
    from sensor_node.rfid import read_card_script

    out = subprocess.run(
        ["sh", str(DOCKER_DIR / "simulated-cards.sh"), "12", "30", "15"], capture_output=True, text=True, check=True
    )
    scans = read_card_script(out.stdout.splitlines(), "simulated-cards")
    assert len(scans) == 24
    assert scans[0].uid == scans[1].uid and scans[1].delay_s == 30.0  # same card ends the session
    assert len({s.uid for s in scans}) == 6


# -- the container scripts, run here against a real Mosquitto ---------------------------------

_CLIENT = """
import json, sys, threading
from inference_node.config import load_config
from transport.connection import MqttConnection
from contract.topics import NodeChannel, node_topic
config = load_config(sys.argv[1], {"mqtt.url": sys.argv[2], "mqtt.ca_file": sys.argv[3]})
conn = MqttConnection(config.mqtt, client_id=config.node_id)
conn.start(wait=True)
receipt = conn.publish(node_topic(config.node_id, NodeChannel.METRICS), b"{}", qos=1)
receipt.wait(10)
print(json.dumps({"node_id": config.node_id, "user": config.mqtt.username, "accepted": receipt.accepted}), flush=True)
sys.stdin.read()  # hold the account (and its lock) until the test closes stdin
conn.stop()
"""


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """broker-init.sh run as the container runs it, and Mosquitto serving the result over TLS."""
    root = tmp_path_factory.mktemp("stack")
    port, tls_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # The container paths, under `root`: test_secrets_at_rest maps the compose volumes here.
        "BROKER_DIR": str(root / "broker-admin"),
        "RUNTIME_DIR": str(root / "broker"),
        "ACCOUNTS_DIR": str(root / "accounts"),
        "INFERENCE_ACCOUNTS": "2",
        "DEVICE_ACCOUNTS": "2",
        "BROKER_PORT": str(port),
        "BROKER_TLS_PORT": str(tls_port),
        "BROKER_HOSTNAMES": "mosquitto localhost",
        "APP_UID": str(os.getuid()),
    }
    out = subprocess.run(
        ["sh", str(DOCKER_DIR / "broker-init.sh")], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    passwords = {p: p.read_text() for p in (root / "accounts").rglob("*.password")}
    assert sorted(p.name for p in passwords) == [
        "bridge.password",
        "infer-1.password",
        "infer-2.password",
        "sim-01.password",
        "sim-02.password",
    ]
    # A second run (every `docker compose up`) keeps the setup and every password.
    again = subprocess.run(
        ["sh", str(DOCKER_DIR / "broker-init.sh")], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    assert "exists; keeping it" in again.stderr
    assert {p: p.read_text() for p in (root / "accounts").rglob("*.password")} == passwords

    log = (root / "mosquitto.log").open("wb")
    proc = subprocess.Popen([find_mosquitto(), "-c", str(root / "broker" / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        wait_for_port("127.0.0.1", tls_port, timeout=10, proc=proc)
        yield root, tls_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _claim(root: Path, tls_port: int, config: Path) -> subprocess.Popen[str]:
    pool = root / "accounts" / "inference"
    return subprocess.Popen(
        [
            "sh",
            str(DOCKER_DIR / "claim-account.sh"),
            str(DOCKER_DIR / "config" / "inference.toml.in"),
            str(config),
            "--",
            sys.executable,
            "-c",
            _CLIENT,
            str(config),
            f"mqtts://localhost:{tls_port}",
            str(pool / "ca.crt"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "ACCOUNT_DIR": str(pool)},
    )


def _first_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"replica exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    result: dict[str, Any] = json.loads(line)
    return result


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_replicas_claim_distinct_accounts_that_log_in_over_tls(provisioned: tuple[Path, int], tmp_path: Path) -> None:
    root, tls_port = provisioned
    first = _claim(root, tls_port, tmp_path / "r1.toml")
    second = _claim(root, tls_port, tmp_path / "r2.toml")
    try:
        a, b = _first_line(first), _first_line(second)
        assert {a["node_id"], b["node_id"]} == {"infer-1", "infer-2"}
        assert a["user"] == f"inference.{a['node_id']}"
        assert a["accepted"] and b["accepted"], "the ACL lets each replica publish under its own node id"

        third = _claim(root, tls_port, tmp_path / "r3.toml")
        _, err = third.communicate(timeout=30)
        assert third.returncode == 1
        assert "no free account" in err

        _release(first)  # a replica stops: its account is free again
        fourth = _claim(root, tls_port, tmp_path / "r4.toml")
        assert _first_line(fourth)["node_id"] == a["node_id"]
        _release(fourth)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                _release(proc)


@pytest.mark.parametrize("dockerfile", ["sensor.Dockerfile", "inference.Dockerfile", "bridge.Dockerfile"])
def test_image_commands_are_accepted_by_the_cli(dockerfile: str) -> None:
    """The containers' `thermoscreen ...` commands use flags the CLI really has."""
    import shlex

    from thermoscreen.cli import build_parser

    text = (DOCKER_DIR / dockerfile).read_text()
    cmd = json.loads(next(line for line in text.splitlines() if line.startswith("CMD "))[4:])
    if cmd[:2] == ["sh", "-c"]:
        cmd = shlex.split(cmd[2].split("exec ", 1)[1])
    assert cmd[0] == "thermoscreen"
    args = build_parser().parse_args(cmd[1:])
    assert callable(args.run)
    assert str(args.config).startswith("/tmp/")
    entrypoint = json.loads(next(line for line in text.splitlines() if line.startswith("ENTRYPOINT "))[11:])
    assert entrypoint[0] == "claim-account" and entrypoint[2] == str(args.config), "claim-account renders that file"


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> mount target of one resolved service (short or long volume syntax)."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type") == "volume":
                mounts[str(entry["source"])] = str(entry["target"])
        else:
            source, target = str(entry).split(":")[:2]
            if not source.startswith((".", "/")):
                mounts[source] = target
    return mounts


@needs_compose
def test_keys_reach_no_network_facing_container(resolved: dict[str, Any], provisioned: tuple[Path, int]) -> None:
    """What each container can read, from the files broker-init.sh really wrote into each volume.

    ca.key and the account registry: broker-init only. site.key: broker-init and the devices
    (they need it for pseudonyms), never Mosquitto, Grafana, InfluxDB, the bridge or inference.
    Each device sees exactly its own password.
    """
    root, _ = provisioned
    services = resolved["services"]
    where = {volume: root / target.lstrip("/") for volume, target in _volume_mounts(services["broker-init"]).items()}
    seen: dict[str, set[str]] = {}
    for name, service in services.items():
        files: set[str] = set()
        for volume in _volume_mounts(service):
            if volume in where:
                files |= {p.name for p in where[volume].rglob("*") if p.is_file()}
        seen[name] = files
    assert {"ca.key", "site.key", "accounts.json"} <= seen["broker-init"]
    for name, files in seen.items():
        if name == "broker-init":
            continue
        assert not files & {"ca.key", "accounts.json"}, (name, files)
        if name not in DEVICES:
            assert "site.key" not in files, (name, files)
    assert {"mosquitto.conf", "server.key", "passwords", "acl"} <= seen["mosquitto"]
    own = {name: sorted(f for f in seen[name] if f.endswith(".password")) for name in DEVICES}
    assert own == {"device-1": ["sim-01.password"], "device-2": ["sim-02.password"]}
    assert all("site.key" in seen[name] and "ca.crt" in seen[name] for name in DEVICES)


@needs_compose
def test_every_service_waits_for_the_secret_check(resolved: dict[str, Any]) -> None:
    """Nothing starts (no Grafana, no InfluxDB with a known password) until `preflight` succeeded."""
    services = resolved["services"]

    def waits_for_preflight(name: str) -> bool:
        deps = services[name].get("depends_on", {})
        names = deps if isinstance(deps, list) else list(deps)
        return "preflight" in names or any(waits_for_preflight(d) for d in names)

    assert sorted(n for n in services if n != "preflight" and not waits_for_preflight(n)) == []
    check = services["preflight"]
    assert check["entrypoint"][0] == "check-secrets"
    assert set(check["entrypoint"][1:]) == set(SECRETS)


def _check_secrets(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DOCKER_DIR / "check-secrets.sh"), *SECRETS],
        env={"PATH": os.environ["PATH"], **values},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_placeholders_of_env_example_are_refused() -> None:
    example = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    out = _check_secrets({k: example[k] for k in SECRETS})
    assert out.returncode == 1
    assert sorted(line.split()[1] for line in out.stderr.splitlines()) == sorted(SECRETS)
    assert "placeholder" in out.stderr
    short = _check_secrets({**SECRETS, "GRAFANA_ADMIN_PASSWORD": "admin"})
    assert short.returncode == 1 and "GRAFANA_ADMIN_PASSWORD is shorter" in short.stderr
    assert _check_secrets(SECRETS).returncode == 0


#: One-shot services: their success is `service_completed_successfully`, not a health state.
ONE_SHOT_SERVICES = {"preflight", "broker-init"}


def test_every_long_running_service_has_a_healthcheck(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    inference = services["inference"]["healthcheck"]["test"]
    assert inference[:2] == ["CMD", "thermoscreen"] and inference[-1] == "--check"
    from thermoscreen.cli import build_parser

    args = build_parser().parse_args(inference[2:])  # the real CLI accepts the healthcheck as written
    assert args.command == "infer" and args.check


def test_the_bridge_healthcheck_reads_the_port_its_config_serves(tmp_path: Path) -> None:
    from cloud_bridge.config import load_config

    rendered = tmp_path / "bridge.toml"
    rendered.write_text(_render("bridge.toml.in", "bridge"))
    config = load_config(rendered, {})
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    test = " ".join(compose["services"]["bridge"]["healthcheck"]["test"])
    assert config.metrics.prometheus_port is not None
    assert f"127.0.0.1:{config.metrics.prometheus_port}/metrics" in test
    assert config.metrics.prometheus_bind == "127.0.0.1"  # loopback: nothing published on the network
