"""The model manifest (`manifest.json` beside the `.tflite` files): what a model is and how to feed it.

Training writes it; the inference node refuses a model whose manifest does not validate or
whose files do not match their sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_FORMAT: Literal["thermoscreen-model/1"] = "thermoscreen-model/1"


class Preprocessing(BaseModel):
    """How raw input becomes the model's input tensor (see contract/model/preprocessing.py).

    `frame_standardize`: per frame, subtract the mean and divide by the standard deviation
    (floored at `min_std_c`), so the model never depends on absolute calibration (the
    MLX90640 is only +-1 C accurate). `rgb_unit`: 8-bit RGB scaled to 0..1 (IDC patches).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["frame_standardize", "rgb_unit"]
    min_std_c: float = Field(default=0.1, gt=0)


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dtype: Literal["float32", "int8"]


class Manifest(BaseModel):
    """`manifest.json`. The model has one output: the probability of `labels[1]` (positive)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["thermoscreen-model/1"] = MANIFEST_FORMAT
    task: Literal["thermal_screening", "idc_histopathology"]
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")
    created: str
    input_shape: list[int] = Field(min_length=3, max_length=3)
    input_dtype: Literal["float32"] = "float32"
    preprocessing: Preprocessing
    labels: list[str] = Field(min_length=2, max_length=2)
    threshold: float = Field(ge=0.0, le=1.0)
    threshold_rule: str
    files: dict[Literal["float32", "int8"], ModelFile]
    default_variant: Literal["float32", "int8"] = "float32"
    provenance: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


class ManifestError(ValueError):
    """A model directory that must not be served; the message is one line."""


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(model_dir: str | Path, *, verify: bool = True) -> Manifest:
    """Read and validate `model_dir/manifest.json`; with `verify`, check every file's sha256."""
    directory = Path(model_dir)
    path = directory / "manifest.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest.json in model directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ManifestError(f"{path}: {loc}: {first.get('msg')}") from None
    if manifest.default_variant not in manifest.files:
        raise ManifestError(f"{path}: default_variant {manifest.default_variant} has no file entry")
    if verify:
        for variant, entry in manifest.files.items():
            file_path = directory / entry.path
            if not file_path.is_file():
                raise ManifestError(f"{path}: {variant} model file {entry.path} is missing")
            actual = sha256_file(file_path)
            if actual != entry.sha256:
                raise ManifestError(
                    f"{path}: sha256 mismatch for {entry.path} (manifest {entry.sha256[:12]}..., file {actual[:12]}...)"
                )
    return manifest
