"""The MQTT contract of thermoscreen, version 1: topics, message types, codec, connection settings.

This is the only package every process shares. Everything on the wire is defined here so that
the device, the inference workers and the bridge cannot disagree about it.
"""

from contract.errors import ContractError
from contract.frame import Frame, SensorKind, decode_frame, encode_frame
from contract.ids import make_patient_ref, new_session_id, validate_device_id, validate_node_id

__all__ = [
    "ContractError",
    "Frame",
    "SensorKind",
    "decode_frame",
    "encode_frame",
    "make_patient_ref",
    "new_session_id",
    "validate_device_id",
    "validate_node_id",
]

PROTOCOL_VERSION = 1
