"""`thermoscreen sensor`: run a screening device (thermal camera + card reader -> spool -> MQTT).

Import-light on purpose: argparse only here; the node, numpy and the drivers load in `run`.
"""

from __future__ import annotations

import argparse

SOURCES = ("mlx90640", "emulated", "replay", "synthetic")
READERS = ("mfrc522", "emulated", "scripted", "none")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a screening device: MLX90640 frames and MFRC522 card scans, spooled on disk and "
        "published over MQTT. A screening aid, not a diagnosis. Without --config, defaults apply: "
        "synthetic source, scripted cards, spool under $XDG_STATE_HOME/thermoscreen."
    )
    parser.add_argument("--config", metavar="FILE", help="sensor TOML config (see sensor_node/sensor.example.toml)")
    parser.add_argument("--source", choices=SOURCES, help="thermal source (overrides source.kind)")
    parser.add_argument("--rfid", choices=READERS, help="card reader (overrides rfid.kind)")
    parser.add_argument("--rate", type=float, metavar="HZ", help="frames per second (overrides source.rate_hz)")
    parser.add_argument("--broker", metavar="URL", help="mqtt://host:port or mqtts://host:port (overrides mqtt.url)")
    parser.add_argument("--spool", metavar="PATH", help="spool SQLite file (overrides spool.path)")
    parser.add_argument("--device-id", metavar="ID", help="device id [a-z0-9-]{1,32} (overrides device.id)")
    parser.add_argument(
        "--cards", metavar="FILE|-", help="card script for the scripted/emulated reader: 'UID [SECONDS]' per line"
    )
    parser.add_argument("--replay", metavar="NPZ", help="thermogram file for --source replay (source.replay.path)")
    parser.add_argument(
        "--anonymous", action="store_true", default=None, help="also publish frames outside sessions (no patient_ref)"
    )
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: run forever)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sensor_node.service import run_sensor

    return run_sensor(args)
