"""Fixtures for the inference tests: tiny models built once per session, frames, running nodes."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from contract.model.manifest import sign_model_dir
from contract.model.signing import generate_key_pair, load_private_key
from devtools.local_mosquitto import LocalMosquitto
from inference_node.config import InferenceConfig, load_config
from inference_node.node import InferenceNode
from tests.conftest import REPO_ROOT
from tests.inference_node.model_factory import sample_frames_c
from tests.mqtt_helpers import Collector, connect, subscribe_and_wait
from transport.connection import MqttConnection


@dataclass(frozen=True)
class ModelDirs:
    """Two model versions: v1 (float32 + int8, version test-1) and v2 (float32, test-2).

    Both signed with a key pair made for this test session (`key_file`, public `public_key`),
    which the nodes the fixtures start pin; the shipped key plays no part in these tests.
    """

    v1: Path
    v2: Path
    key_file: Path
    public_key: str

    def sign(self, model_dir: Path) -> Path:
        """Sign `model_dir` as the trusted trainer would (also junk: the signer is trusted, not the model)."""
        sign_model_dir(model_dir, load_private_key(self.key_file))
        return model_dir


@pytest.fixture(scope="session")
def test_models(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    """Built by model_factory in a subprocess, so TensorFlow never loads into the test process."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("building the test models needs TensorFlow (the train extra); the node itself does not")
    root = tmp_path_factory.mktemp("models")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.inference_node.model_factory", str(root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"model factory failed: {proc.stderr[-2000:]}"
    key_file = tmp_path_factory.mktemp("keys") / "signing.key"
    models = ModelDirs(v1=root / "v1", v2=root / "v2", key_file=key_file, public_key=generate_key_pair(key_file))
    models.sign(models.v1)
    models.sign(models.v2)
    return models


@pytest.fixture(scope="session")
def frames_c() -> npt.NDArray[np.float32]:
    """16 distinct emulated MLX90640 frames (degrees C)."""
    return sample_frames_c(16, seed=42)


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


NodeFactory = Callable[..., InferenceNode]


@pytest.fixture
def start_node(mosquitto: LocalMosquitto, test_models: ModelDirs) -> Iterator[NodeFactory]:
    """Starts in-process nodes against the test broker; stops them (gracefully) afterwards."""
    nodes: list[InferenceNode] = []

    def start(**overrides: object) -> InferenceNode:
        values: dict[str, object] = {
            "mqtt.url": mosquitto.url,
            "node_id": "infer-t",
            "model_dir": str(test_models.v1),
            "model_poll_s": 0,
            "metrics_interval_s": 0.3,
            "model_public_keys": [test_models.public_key],
        }
        values.update({key.replace("__", "."): value for key, value in overrides.items()})
        config: InferenceConfig = load_config(None, values)
        node = InferenceNode(config).start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


ClientFactory = Callable[[], MqttConnection]


@pytest.fixture
def clients(mosquitto: LocalMosquitto) -> Iterator[ClientFactory]:
    """Connected test clients, stopped at teardown (before the broker)."""
    made: list[MqttConnection] = []

    def make() -> MqttConnection:
        conn = connect(mosquitto.url)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.stop()


@pytest.fixture
def observer(clients: ClientFactory) -> Collector:
    """Everything published under thermo/v1/, from before the node starts."""
    collector = Collector()
    subscribe_and_wait(clients(), "thermo/v1/#", collector)
    return collector
