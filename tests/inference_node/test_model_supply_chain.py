"""Who may change the served model: signatures, the models root, the thermal contract, retained admin messages.

Real nodes against a real Mosquitto; every refusal must leave the old model serving and say why.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from contract.messages import DeadLetter, ModelSwap, NodeMetrics, decode_message, encode_message
from contract.model.manifest import ManifestError, sha256_file, sign_model_dir
from contract.model.signing import generate_key_pair, load_private_key
from contract.topics import ADMIN_MODEL_TOPIC
from inference_node.config import load_config
from inference_node.node import InferenceNode
from tests.inference_node.conftest import ClientFactory, ModelDirs, NodeFactory, copy_model
from tests.inference_node.frames import all_acked, count_verdicts, publish_frames, verdicts
from tests.inference_node.test_config_cli import run_cli
from tests.mqtt_helpers import Collector
from transport.connection import MqttConnection

Images = npt.NDArray[np.float32]


def _letters(observer: Collector) -> list[DeadLetter]:
    return [
        decode_message(m.payload, DeadLetter) for m in observer.messages if m.topic.endswith("/deadletter/inference")
    ]


def _edit_manifest(model: Path, **changes: object) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    manifest.update(changes)
    (model / "manifest.json").write_text(json.dumps(manifest))


def _candidates(models: ModelDirs, root: Path) -> dict[str, str]:
    """Model directories under `root` a hostile client or a careless operator might offer -> expected refusal."""
    unsigned = copy_model(models.v2, root / "unsigned")
    (unsigned / "manifest.json.sig").unlink()
    other = copy_model(models.v2, root / "other-key")
    sign_model_dir(other, load_private_key(_other_key(root)))
    tampered = copy_model(models.v2, root / "tampered")
    _edit_manifest(tampered, threshold=0.01)  # after signing: flags nearly everyone
    models.sign(_edited(copy_model(models.v2, root / "threshold-one"), threshold=1.0))
    wrong_dtype = copy_model(models.v1, root / "wrong-dtype")
    manifest = json.loads((wrong_dtype / "manifest.json").read_text())
    manifest["files"]["float32"] = {**manifest["files"]["int8"], "dtype": "float32"}
    manifest["version"] = "test-2"
    (wrong_dtype / "manifest.json").write_text(json.dumps(manifest))
    models.sign(wrong_dtype)
    os.symlink(models.v2, root / "escape")  # a signed model, but outside the models root
    return {
        "unsigned": "manifest is not signed",
        "other-key": "does not verify with any trusted key",
        "tampered": "does not verify with any trusted key",
        "threshold-one": "threshold 1.0 is not strictly inside (0, 1)",
        "wrong-dtype": "takes int8 input, manifest declares float32",
        "escape": "outside the models root",
        str(models.v2): "must be a name relative to the models root",
        "../v2": "without '..'",
    }


def _requested(letter: DeadLetter) -> tuple[str, str | None]:
    """(model_dir, expected_version) of the swap a dead letter refused (its payload sample is the whole message)."""
    swap = decode_message(base64.b64decode(letter.payload_b64), ModelSwap)
    return swap.model_dir, swap.expected_version


def _wait_for_letters(observer: Collector, count: int) -> None:
    observer.wait_until(lambda ms: len(_letters(observer)) >= count, 10, f"{count} dead letters")


def _other_key(root: Path) -> Path:
    path = root.parent / "untrusted.key"
    generate_key_pair(path)
    return path


def _edited(model: Path, **changes: object) -> Path:
    _edit_manifest(model, **changes)
    return model


def _swap(admin: MqttConnection, model_dir: str, expected: str | None, *, retain: bool = False) -> None:
    payload = encode_message(ModelSwap(model_dir=model_dir, expected_version=expected))
    assert admin.publish(ADMIN_MODEL_TOPIC, payload, qos=1, retain=retain).wait(5)


def test_untrusted_or_unfit_models_are_refused_and_the_old_model_keeps_serving(
    *,
    observer: Collector,
    clients: ClientFactory,
    start_node: NodeFactory,
    test_models: ModelDirs,
    frames_c: Images,
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    node = start_node(model_dir=str(copy_model(test_models.v1, root / "v1")))
    copy_model(test_models.v2, root / "v2")
    refusals = _candidates(test_models, root)
    admin = clients()
    for name in refusals:
        _swap(admin, name, "test-2")
    _swap(admin, "v2", None)  # the right model, but the admin did not say which version it expects
    observer.wait_until(lambda ms: len(_letters(observer)) >= len(refusals) + 1, 30, "every refusal")
    by_request = {_requested(letter): letter for letter in _letters(observer)}
    for name, needle in [*refusals.items(), ("v2", "expected_version is required")]:
        letter = by_request[(name, "test-2" if name != "v2" else None)]
        assert letter.reason.startswith("model swap refused, still serving test-1: "), letter.reason
        assert needle in letter.reason, (name, letter.reason)
        assert letter.topic == ADMIN_MODEL_TOPIC
    assert node.model_version == "test-1" and node.stats.model_swaps_refused == len(refusals) + 1
    assert node.last_refusal is not None and node.last_refusal.startswith("model swap refused")

    pub = clients()
    all_acked(publish_frames(pub, frames_c, "pi-7", range(5)))
    observer.wait_until(lambda ms: count_verdicts(ms) >= 5, 10, "verdicts from the old model")
    v1_sha = sha256_file(test_models.v1 / "thermal_float32.tflite")
    assert {(v.model_version, v.model_sha256) for v in verdicts(observer.messages)} == {("test-1", v1_sha)}

    _swap(admin, "v2", "test-2")  # and a signed, fitting model named properly is served
    assert node.wait_for_model("test-2", 20), node.last_refusal


def test_a_node_does_not_start_on_an_unsigned_model(test_models: ModelDirs, tmp_path: Path) -> None:
    model = copy_model(test_models.v1, tmp_path / "v1")
    (model / "manifest.json.sig").unlink()
    config = load_config(None, {"model_dir": str(model), "model_public_keys": [test_models.public_key]})
    with pytest.raises(ManifestError, match="manifest is not signed"):
        InferenceNode(config).start()
    out = run_cli(
        "infer", "--model", str(model), "--model-key", test_models.public_key, "--broker", "mqtt://127.0.0.1:9"
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "manifest is not signed" in lines[0], lines


def test_the_shipped_key_does_not_trust_the_test_models(test_models: ModelDirs) -> None:
    config = load_config(None, {"model_dir": str(test_models.v1)})
    with pytest.raises(ManifestError, match="does not verify with any trusted key"):
        InferenceNode(config).start()


def test_a_retained_swap_is_ignored_on_start_and_after_a_restart(
    *,
    observer: Collector,
    clients: ClientFactory,
    start_node: NodeFactory,
    test_models: ModelDirs,
) -> None:
    admin = clients()
    _swap(admin, "v2", "test-2", retain=True)  # a stale order the broker would replay on every connect
    for attempt in (1, 2):
        node = start_node()
        _wait_for_letters(observer, attempt)
        assert "retained admin message ignored" in _letters(observer)[-1].reason
        assert not node.wait_for_model("test-2", 0.5) and node.model_version == "test-1"
        node.stop()
    node = start_node()
    _swap(admin, "v2", "test-2")  # the same order, live, is obeyed
    assert node.wait_for_model("test-2", 20), node.last_refusal


def test_a_full_frame_queue_drops_and_counts_instead_of_growing(
    *,
    observer: Collector,
    clients: ClientFactory,
    start_node: NodeFactory,
    frames_c: Images,
) -> None:
    node = start_node(max_pending_frames=5, batch_max=1)
    pub = clients()
    n = 40
    with node._pending_lock:  # holds the worker at its next batch boundary: it cannot keep up
        all_acked(publish_frames(pub, frames_c, "pi-8", range(n)))
        observer.wait_until(lambda ms: node.frames_dropped >= n - 6, 10, "frames dropped at the bound")
    observer.wait_until(lambda ms: count_verdicts(ms) + node.frames_dropped >= n, 10, "the queued frames answered")
    assert count_verdicts(observer.messages) + node.frames_dropped == n
    assert count_verdicts(observer.messages) <= 6, "at most the bound plus the batch in hand"
    dropped = float(node.frames_dropped)
    observer.wait_until(
        lambda ms: any(
            decode_message(m.payload, NodeMetrics).values.get("frames_dropped") == dropped
            for m in ms
            if m.topic.endswith("/metrics")
        ),
        10,
        "frames_dropped in the metrics",
    )
