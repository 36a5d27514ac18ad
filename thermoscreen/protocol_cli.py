"""`thermoscreen protocol decode|encode-sample`: inspect and produce contract v1 payloads."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from contract.errors import ContractError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="protocol_command", metavar="ACTION", required=True)
    dec = sub.add_parser(
        "decode",
        help="print a payload (binary frame or JSON message) as JSON",
        description="Decode a payload and print it as one JSON object. Exit 2 with one line if malformed.",
    )
    dec.add_argument("file", help="payload file, or - for standard input")
    dec.add_argument(
        "--type",
        default="auto",
        choices=["auto", "frame", *sorted(_message_types())],
        help="payload type (default: detect)",
    )
    dec.set_defaults(run=_decode)
    enc = sub.add_parser("encode-sample", help="write a valid sample frame", description="Write a sample frame.")
    enc.add_argument("--out", required=True, help="output file")
    enc.add_argument("--device-id", default="sample-device", help="device id in the frame")
    enc.set_defaults(run=_encode_sample)


def _message_types() -> dict[str, Any]:
    from contract.messages import MESSAGE_TYPES

    return dict(MESSAGE_TYPES)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ContractError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ContractError(f"{path}: is a directory") from None


def describe_frame(payload: bytes) -> dict[str, Any]:
    from contract.frame import decode_frame

    frame = decode_frame(payload)
    temps = frame.temperatures_c
    return {
        "type": "frame",
        "format_version": 1,
        "device_id": frame.device_id,
        "seq": frame.seq,
        "capture_ns": frame.capture_ns,
        "session_id": frame.session_id,
        "patient_ref": frame.patient_ref,
        "sensor": frame.sensor.name.lower(),
        "rows": frame.shape[0],
        "cols": frame.shape[1],
        "ambient_c": frame.ambient_c,
        "temperature_c": {
            "min": round(float(temps.min()), 2),
            "max": round(float(temps.max()), 2),
            "mean": round(float(temps.mean()), 2),
        },
        "bytes": len(payload),
    }


def describe_payload(payload: bytes, kind: str = "auto") -> dict[str, Any]:
    """Decode any contract v1 payload into a JSON-able summary; ContractError if it is none."""
    from contract.frame import MAGIC
    from contract.messages import decode_message

    types = _message_types()
    if kind == "frame" or (kind == "auto" and payload[:3] == MAGIC):
        return describe_frame(payload)
    if kind != "auto":
        msg = decode_message(payload, types[kind])
        return {"type": kind, **msg.model_dump(mode="json", exclude_none=True)}
    if not payload.lstrip()[:1] == b"{":
        raise ContractError(f"not a contract v1 payload: neither a TSF frame nor a JSON object ({len(payload)} bytes)")
    errors: list[str] = []
    for name, model in types.items():
        try:
            msg = decode_message(payload, model)
        except ContractError as exc:
            errors.append(str(exc))
            continue
        return {"type": name, **msg.model_dump(mode="json", exclude_none=True)}
    # Every type failed: report the shortest complaint, usually the nearest type.
    raise ContractError(min(errors, key=len))


def _decode(args: argparse.Namespace) -> int:
    payload = _read(args.file)
    try:
        summary = describe_payload(payload, args.type)
    except ContractError as exc:
        where = "stdin" if args.file == "-" else args.file
        print(f"thermoscreen protocol decode: {where}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _encode_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from contract.frame import Frame, SensorKind, encode_frame
    from contract.ids import new_session_id
    from contract.sensor import MLX_COLS, MLX_ROWS

    rows, cols = np.mgrid[0:MLX_ROWS, 0:MLX_COLS]
    body = 30.0 + 4.0 * np.exp(-(((cols - 15.5) / 10.0) ** 2 + ((rows - 14.0) / 8.0) ** 2))
    frame = Frame.from_celsius(
        body,
        device_id=args.device_id,
        seq=1,
        capture_ns=time.time_ns(),
        ambient_c=23.5,
        sensor=SensorKind.SYNTHETIC,
        session_id=new_session_id(),
        patient_ref="0123456789abcdef",
    )
    data = encode_frame(frame)
    Path(args.out).write_bytes(data)
    print(f"wrote {len(data)} bytes to {args.out}", file=sys.stderr)
    return 0
