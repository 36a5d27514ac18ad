"""Topic names of contract v1 and a parser that tells what a topic carries."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from contract.errors import ContractError
from contract.ids import validate_device_id, validate_node_id

ROOT = "thermo/v1"


class DeviceChannel(StrEnum):
    """What a device-scoped topic carries."""

    FRAME = "frame"
    RFID = "rfid"
    STATUS = "status"
    VERDICT = "verdict"
    SESSION_VERDICT = "session_verdict"


class NodeChannel(StrEnum):
    """What a node-scoped (inference worker or bridge) topic carries."""

    STATUS = "status"
    METRICS = "metrics"


def device_topic(device_id: str, channel: DeviceChannel) -> str:
    return f"{ROOT}/{validate_device_id(device_id)}/{channel.value}"


def frame_topic(device_id: str) -> str:
    return device_topic(device_id, DeviceChannel.FRAME)


def rfid_topic(device_id: str) -> str:
    return device_topic(device_id, DeviceChannel.RFID)


def status_topic(device_id: str) -> str:
    return device_topic(device_id, DeviceChannel.STATUS)


def verdict_topic(device_id: str) -> str:
    return device_topic(device_id, DeviceChannel.VERDICT)


def session_verdict_topic(device_id: str) -> str:
    return device_topic(device_id, DeviceChannel.SESSION_VERDICT)


def node_topic(node_id: str, channel: NodeChannel) -> str:
    return f"{ROOT}/nodes/{validate_node_id(node_id)}/{channel.value}"


def reoffer_topic(device_id: str) -> str:
    """A frame the bridge offers the inference nodes again (no verdict came): only the bridge writes here,
    so it never needs to write a device's own topics."""
    return f"{ROOT}/reoffer/{validate_device_id(device_id)}/{DeviceChannel.FRAME.value}"


def receipts_topic(bridge_id: str) -> str:
    """Where a storage bridge publishes which frames it committed (several bridges: docs/scaling.md);
    only bridge accounts may write here, each under its own node id."""
    return f"{ROOT}/bridges/{validate_node_id(bridge_id)}/receipts"


def deadletter_topic(component: str) -> str:
    return f"{ROOT}/deadletter/{validate_node_id(component)}"


#: Model-swap commands for inference nodes; only the admin role may publish here.
ADMIN_MODEL_TOPIC = f"{ROOT}/admin/model"

# Subscription filters.
ALL_FRAMES = f"{ROOT}/+/frame"
ALL_RFID = f"{ROOT}/+/rfid"
ALL_DEVICE_STATUS = f"{ROOT}/+/status"
ALL_VERDICTS = f"{ROOT}/+/verdict"
ALL_SESSION_VERDICTS = f"{ROOT}/+/session_verdict"
ALL_NODE_STATUS = f"{ROOT}/nodes/+/status"
ALL_NODE_METRICS = f"{ROOT}/nodes/+/metrics"
ALL_DEADLETTERS = f"{ROOT}/deadletter/+"
ALL_REOFFERS = f"{ROOT}/reoffer/+/{DeviceChannel.FRAME.value}"
ALL_RECEIPTS = f"{ROOT}/bridges/+/receipts"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT v5 shared-subscription filter: each message goes to one member of `group`."""
    validate_node_id(group)
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True)
class TopicInfo:
    """What a concrete topic addresses."""

    scope: str  # "device", "node", "bridge", "deadletter" or "admin"
    channel: str
    device_id: str | None = None
    node_id: str | None = None
    component: str | None = None


def parse_topic(topic: str) -> TopicInfo:
    """Classify a concrete topic of contract v1; raise ContractError for anything else."""
    parts = topic.split("/")
    if len(parts) < 3 or f"{parts[0]}/{parts[1]}" != ROOT:
        raise ContractError(f"topic {topic!r} is not under {ROOT}/")
    rest = parts[2:]
    if rest[0] == "nodes":
        if len(rest) != 3 or rest[2] not in {c.value for c in NodeChannel}:
            raise ContractError(f"topic {topic!r}: expected {ROOT}/nodes/<node_id>/status|metrics")
        return TopicInfo("node", rest[2], node_id=validate_node_id(rest[1]))
    if rest[0] == "deadletter":
        if len(rest) != 2:
            raise ContractError(f"topic {topic!r}: expected {ROOT}/deadletter/<component>")
        return TopicInfo("deadletter", "deadletter", component=validate_node_id(rest[1]))
    if rest[0] == "reoffer":  # a re-offered frame reads as its device's frame
        if len(rest) != 3 or rest[2] != DeviceChannel.FRAME.value:
            raise ContractError(f"topic {topic!r}: expected {ROOT}/reoffer/<device_id>/frame")
        return TopicInfo("device", rest[2], device_id=validate_device_id(rest[1]))
    if rest[0] == "bridges":
        if len(rest) != 3 or rest[2] != "receipts":
            raise ContractError(f"topic {topic!r}: expected {ROOT}/bridges/<node_id>/receipts")
        return TopicInfo("bridge", "receipts", node_id=validate_node_id(rest[1]))
    if rest[0] == "admin":
        if topic != ADMIN_MODEL_TOPIC:
            raise ContractError(f"topic {topic!r}: unknown admin topic")
        return TopicInfo("admin", "model")
    if len(rest) != 2 or rest[1] not in {c.value for c in DeviceChannel}:
        raise ContractError(f"topic {topic!r}: expected {ROOT}/<device_id>/" + "|".join(c.value for c in DeviceChannel))
    return TopicInfo("device", rest[1], device_id=validate_device_id(rest[0]))
