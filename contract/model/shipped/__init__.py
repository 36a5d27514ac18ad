"""The model thermoscreen ships, as package data: found wherever the package is installed.

A relative `models/thermal` only worked inside a checkout; `importlib.resources` finds the
files in a wheel install too (a regular, unzipped install: LiteRT needs a file path). It lives
under `contract` because every runtime that scores frames (the inference node, the sensor's
future edge mode) needs the same model.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

#: The public key that signed the shipped model (its private half stays with whoever trains, never
#: in git). The inference node and the sensor's edge mode both trust it by default.
SHIPPED_MODEL_PUBLIC_KEY = "ed25519:Asu7VbMS3OjGRDP+prW6ucSGJPbkFVYqPIYBvjEATBA="
#: The shipped model's directory name inside this package.
SHIPPED_MODEL_NAME = "thermal"


def shipped_models_root() -> Path:
    """The directory holding the shipped model(s): the default `models_root` of the inference node."""
    return Path(str(resources.files(__name__)))


def shipped_model_dir() -> Path:
    """The shipped thermal model's directory (manifest.json, its signature and the .tflite files)."""
    return shipped_models_root() / SHIPPED_MODEL_NAME


def shipped_model_version() -> str:
    """The shipped model's manifest version, read without verifying (for `--version`; loading verifies)."""
    manifest = json.loads((shipped_model_dir() / "manifest.json").read_text(encoding="utf-8"))
    return str(manifest["version"])
