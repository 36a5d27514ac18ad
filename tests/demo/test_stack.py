"""LocalStack: the real processes over TLS, each with its own account; one inference node killed."""

from __future__ import annotations

import signal
from pathlib import Path

from devtools.stack import BRIDGE, LocalStack, StackOptions
from devtools.traffic import TrafficSnapshot

TIMEOUT_S = 60.0


def _verdicts(snap: TrafficSnapshot, node_id: str) -> int:
    node = snap.node(node_id)
    return 0 if node is None else node.verdicts


def _state(snap: TrafficSnapshot, node_id: str) -> str | None:
    node = snap.node(node_id)
    return None if node is None else node.state


def test_other_node_keeps_verdicting_after_one_is_killed(tmp_path: Path, model_dir: Path, local_servers: None) -> None:
    options = StackOptions(devices=1, nodes=2, rate_hz=10.0, model_dir=model_dir, sessions=None, anonymous_capture=True)
    with LocalStack(tmp_path / "stack", options) as stack:
        # Configured as an operator would: TLS URL, own username and CA; the password is not in the file.
        infer_conf = (stack.config_dir / "infer-1.toml").read_text(encoding="utf-8")
        assert stack.tls_url in infer_conf and '"inference.infer-1"' in infer_conf and str(stack.ca_file) in infer_conf
        for name in ("infer-1", "infer-2", BRIDGE, "demo-1"):
            text = (stack.config_dir / f"{name}.toml").read_text(encoding="utf-8")
            assert stack.accounts[name].password not in text

        monitor = stack.monitor
        assert monitor.wait_until(
            lambda s: _verdicts(s, "infer-1") >= 3 and _verdicts(s, "infer-2") >= 3, TIMEOUT_S, poll=stack.check_alive
        ), "both nodes should share the frames"

        stack.kill("infer-1")
        assert stack.component("infer-1").returncode == -signal.SIGKILL
        # The broker publishes infer-1's last will after everything it sent before dying.
        assert monitor.wait_until(lambda s: _state(s, "infer-1") == "offline", TIMEOUT_S), "no last will for infer-1"
        before = monitor.snapshot()
        assert monitor.wait_until(
            lambda s: _verdicts(s, "infer-2") >= _verdicts(before, "infer-2") + 20,
            TIMEOUT_S,
            poll=stack.check_alive,  # a killed component on purpose is not an error
        ), "infer-2 stopped verdicting after infer-1 was killed"
        after = monitor.snapshot()
        assert _verdicts(after, "infer-1") == _verdicts(before, "infer-1")
        assert after.frames_published > before.frames_published

        stack.start_component("infer-1")  # back with the same config and account: it shares the load again
        assert stack.component("infer-1").starts == 2
        assert monitor.wait_until(
            lambda s: _verdicts(s, "infer-1") >= _verdicts(after, "infer-1") + 3, TIMEOUT_S, poll=stack.check_alive
        ), "the restarted node got no frames"
        report = stack.shutdown(drain_timeout_s=10.0)

    assert report.exit_codes == {"demo-1": 0, "infer-1": 0, "infer-2": 0, BRIDGE: 0}
    # Whatever reached the broker is in the archive (frames in flight to the killed node may lack a verdict).
    assert report.archive["frames"] == report.traffic.frames_published
    assert report.traffic.deadletters == 0
    log = stack.broker.log_path.read_text(encoding="utf-8", errors="replace")
    for username in ("demo-1", "inference.infer-1", "inference.infer-2", "bridge.main", "admin.monitor"):
        assert f"u'{username}')" in log, f"{username} never logged in"
    assert "not authorised" not in log
