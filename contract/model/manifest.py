"""The model manifest (`manifest.json` beside the `.tflite` files): what a model is and how to feed it.

Training writes it and signs it (`manifest.json.sig`, see contract/model/signing.py); the
inference node refuses a model whose manifest is not signed by a trusted key, does not
validate, names a file outside its directory, or whose files do not match their sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contract.model.signing import SigningError, sign_manifest_bytes, verify_signature

MANIFEST_FORMAT: Literal["thermoscreen-model/1"] = "thermoscreen-model/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = MANIFEST_NAME + ".sig"


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
    path: str = Field(min_length=1, max_length=255)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dtype: Literal["float32", "int8"]

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        """A model file lives in the model directory: no absolute path, no `..`, no backslash tricks."""
        pure = PurePosixPath(value)
        if pure.is_absolute() or "\\" in value or ".." in pure.parts or value.startswith("~"):
            raise ValueError(f"model file path {value!r} must be relative to the model directory, without '..'")
        return value


class EnsembleMember(BaseModel):
    """One cross-validation fold model inside the ensemble's single `.tflite` (one output column each)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    seed: int
    trained_on: str = Field(max_length=256)


class Ensemble(BaseModel):
    """K fold models in one `.tflite`: output (N, K) member logits, combined by their mean.

    One file with K output columns instead of K files: the node invokes once per batch, so the
    K members cost one interpreter call (see `thermoscreen bench inference`); the file's sha256
    covers every member.
    """

    model_config = ConfigDict(extra="forbid")
    combine: Literal["mean_logit"] = "mean_logit"
    output: Literal["member_logits"] = "member_logits"
    members: list[EnsembleMember] = Field(min_length=2, max_length=16)


class Calibration(BaseModel):
    """Platt scaling of the combined logit z: probability = sigmoid(slope * z + intercept)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["platt"] = "platt"
    slope: float = Field(gt=0.0, le=100.0)
    intercept: float = Field(ge=-100.0, le=100.0)
    fitted_on: str = Field(max_length=256)


class InconclusiveRule(BaseModel):
    """When a result is "inconclusive: repeat the capture" rather than yes or no.

    Inconclusive when the (calibrated) probability lies in [band_low, band_high], or when the
    members' logits spread (population standard deviation) more than `max_member_spread`.
    """

    model_config = ConfigDict(extra="forbid")
    band_low: float = Field(ge=0.0, le=1.0)
    band_high: float = Field(ge=0.0, le=1.0)
    max_member_spread: float | None = Field(default=None, gt=0.0)
    rule: str = Field(max_length=512)


class Manifest(BaseModel):
    """`manifest.json`. The model's output is the probability of `labels[1]` (positive), or with
    `ensemble` one logit per member, combined (and calibrated with `calibration`) by the runner."""

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
    ensemble: Ensemble | None = None
    calibration: Calibration | None = None
    inconclusive: InconclusiveRule | None = None
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


def model_file_path(directory: Path, entry: ModelFile) -> Path:
    """Where `entry` lives, after following symlinks; ManifestError when that is outside `directory`."""
    root = directory.resolve()
    target = (root / entry.path).resolve()
    if not target.is_relative_to(root):
        raise ManifestError(
            f"{directory / MANIFEST_NAME}: model file {entry.path} resolves outside the model directory"
        )
    return target


def _check_signature(directory: Path, manifest_bytes: bytes, trusted_keys: Sequence[str]) -> None:
    sig_path = directory / SIGNATURE_NAME
    try:
        signature = sig_path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ManifestError(f"{directory / MANIFEST_NAME}: manifest is not signed (no {SIGNATURE_NAME})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{sig_path}: unreadable signature: {exc}") from None
    try:
        verify_signature(manifest_bytes, signature, trusted_keys)
    except SigningError as exc:
        raise ManifestError(f"{sig_path}: {exc}") from None


def load_manifest(model_dir: str | Path, *, verify: bool = True, trusted_keys: Sequence[str] | None = None) -> Manifest:
    """Read and validate `model_dir/manifest.json`; with `verify`, check every file's sha256.

    With `trusted_keys` (what a serving node always passes), the manifest must also carry a
    valid signature by one of them; the bytes verified are the bytes parsed, read once.
    Without, anyone who can write the directory decides what it holds (training, evaluation).
    """
    directory = Path(model_dir)
    path = directory / MANIFEST_NAME
    try:
        manifest_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no {MANIFEST_NAME} in model directory") from None
    except OSError as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc.strerror}") from None
    if trusted_keys is not None:
        _check_signature(directory, manifest_bytes, trusted_keys)
    try:
        raw = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
            file_path = model_file_path(directory, entry)
            if not file_path.is_file():
                raise ManifestError(f"{path}: {variant} model file {entry.path} is missing")
            actual = sha256_file(file_path)
            if actual != entry.sha256:
                raise ManifestError(
                    f"{path}: sha256 mismatch for {entry.path} (manifest {entry.sha256[:12]}..., file {actual[:12]}...)"
                )
    return manifest


def sign_model_dir(model_dir: Path, key: Ed25519PrivateKey) -> Path:
    """Sign `model_dir/manifest.json` as it is now (after checking it); returns the signature file."""
    load_manifest(model_dir, verify=True)
    manifest_bytes = (model_dir / MANIFEST_NAME).read_bytes()
    path = model_dir / SIGNATURE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(sign_manifest_bytes(manifest_bytes, key) + "\n", encoding="ascii")
    tmp.replace(path)
    return path
