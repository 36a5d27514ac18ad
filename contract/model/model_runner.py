"""`ModelRunner`: one validated model directory, ready to score batches of frames.

The pluggable runtime seam of the node (in the spirit of Frigate's detectors): the node hands
it temperatures and gets probabilities back; everything TFLite-specific lives here, namely
choosing the float32 or int8 file, quantising inputs and dequantising outputs from the
interpreter's own tensor details, and batching. Interpreters are kept per power-of-two batch
size because re-planning a resized interpreter costs ~0.1 ms, more than scoring 16 frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.model.litert import interpreter_factory, quiet_native_banner
from contract.model.manifest import (
    InconclusiveRule,
    Manifest,
    ManifestError,
    load_manifest,
    model_file_path,
    sha256_bytes,
)
from contract.model.preprocessing import preprocess
from contract.sensor import MLX_COLS, MLX_ROWS
from contract.session_rule import LOGIT_EPS

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

QUANTISED_DTYPES = (np.int8, np.uint8)

#: The thermal contract a served model must fit: one MLX90640 frame in, float32 as declared.
THERMAL_INPUT_SHAPE = [MLX_ROWS, MLX_COLS, 1]
#: The interpreter input dtype each declared file dtype must have.
FILE_INPUT_DTYPES: dict[str, type[np.generic]] = {"float32": np.float32, "int8": np.int8}


def check_thermal_contract(manifest: Manifest, where: Path) -> None:
    """Refuse a manifest that would make the node dead-letter every frame or flag nobody.

    A threshold of 0 flags every woman and 1 flags none, silently: it must lie strictly inside (0, 1).
    """
    problems = []
    if manifest.task != "thermal_screening" or manifest.preprocessing.kind != "frame_standardize":
        problems.append(f"model task {manifest.task} ({manifest.preprocessing.kind}) is not a thermal frame model")
    if list(manifest.input_shape) != THERMAL_INPUT_SHAPE:
        problems.append(f"input_shape {manifest.input_shape} is not the sensor's {THERMAL_INPUT_SHAPE}")
    if manifest.input_dtype != "float32":
        problems.append(f"input_dtype {manifest.input_dtype} is not float32")
    if not 0.0 < manifest.threshold < 1.0:
        problems.append(f"threshold {manifest.threshold} is not strictly inside (0, 1)")
    if len(set(manifest.labels)) != 2:
        problems.append(f"labels {manifest.labels} are not two distinct names")
    band = manifest.inconclusive
    if band is not None and not band.band_low <= manifest.threshold <= band.band_high:
        problems.append(
            f"inconclusive band [{band.band_low}, {band.band_high}] does not contain threshold {manifest.threshold}"
        )
    if problems:
        raise ManifestError(f"{where}: {'; '.join(problems)}")


def reference_frame_c() -> FloatArray:
    """A plausible 24x32 frame (22 C room, a 34 C torso): warms up a model when no real frame came yet."""
    rows, cols = np.mgrid[0:MLX_ROWS, 0:MLX_COLS].astype(np.float32)
    torso = ((rows - MLX_ROWS / 2) / 9.0) ** 2 + ((cols - MLX_COLS / 2) / 12.0) ** 2 <= 1.0
    frame: FloatArray = (np.where(torso, 34.0, 22.0) + 0.01 * (rows + cols)).astype(np.float32)
    return frame


@dataclass(frozen=True)
class TensorSpec:
    """How values cross one interpreter tensor: its dtype and affine quantisation (scale 0 = float)."""

    index: int
    dtype: type[np.generic]
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> TensorSpec:
        scale, zero_point = details.get("quantization", (0.0, 0))
        return cls(int(details["index"]), details["dtype"], float(scale), int(zero_point))

    @property
    def quantised(self) -> bool:
        return self.dtype in QUANTISED_DTYPES

    def quantise(self, x: FloatArray) -> npt.NDArray[Any]:
        if not self.quantised:
            return x.astype(self.dtype, copy=False)
        info = np.iinfo(np.dtype(self.dtype))
        q = np.rint(x / np.float32(self.scale)) + np.float32(self.zero_point)
        out: npt.NDArray[Any] = np.clip(q, info.min, info.max).astype(self.dtype)
        return out

    def dequantise(self, y: npt.NDArray[Any]) -> FloatArray:
        if not self.quantised:
            return y.astype(np.float32, copy=False)
        return ((y.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)).astype(np.float32)


#: The largest |logit| (that of 1 - LOGIT_EPS): ~13.8.
LOGIT_LIMIT = float(np.log((1.0 - LOGIT_EPS) / LOGIT_EPS))


def probability_logit(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6] (the session rule's clip)."""
    q = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    out: npt.NDArray[np.float64] = np.log(q / (1.0 - q))
    return out


def stable_sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    out: npt.NDArray[np.float64] = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes we keep interpreters for: powers of two below `max_batch`, and `max_batch`."""
    sizes = []
    size = 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch)
    return sizes


class ModelRunner:
    """A loaded model: `predict_celsius(frames)` -> probability of `manifest.labels[1]` per frame."""

    def __init__(
        self,
        model_dir: Path,
        manifest: Manifest,
        variant: str,
        model_content: bytes,
        *,
        num_threads: int = 1,
        max_batch: int = 32,
    ) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self.variant = variant
        #: sha256 of the .tflite bytes this runner serves (carried by every verdict and status).
        self.model_sha256 = sha256_bytes(model_content)
        self.num_threads = num_threads
        factory, self.runtime = interpreter_factory()
        self._factory = factory
        self._content = model_content
        first = self._new_interpreter()
        inputs, outputs = first.get_input_details(), first.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ManifestError(
                f"{model_dir}: model has {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1"
            )
        shape = [int(d) for d in inputs[0]["shape"]]
        signature = [int(d) for d in inputs[0].get("shape_signature", inputs[0]["shape"])]
        if shape[1:] != list(manifest.input_shape):
            raise ManifestError(
                f"{model_dir}: model input {shape[1:]} does not match manifest input_shape {manifest.input_shape}"
            )
        out_shape = [int(d) for d in outputs[0]["shape"]]
        #: Output columns per frame: one probability, or one logit per ensemble member.
        self.members = len(manifest.ensemble.members) if manifest.ensemble is not None else 1
        if int(np.prod(out_shape[1:], dtype=np.int64)) != self.members:
            what = f"{self.members} member logits" if manifest.ensemble is not None else "one probability"
            raise ManifestError(f"{model_dir}: model output {out_shape} is not {what} per frame")
        self._input = TensorSpec.from_details(inputs[0])
        self._output = TensorSpec.from_details(outputs[0])
        declared = manifest.files[variant].dtype  # type: ignore[index]
        if self._input.dtype != FILE_INPUT_DTYPES[declared]:
            raise ManifestError(
                f"{model_dir}: {variant} model takes {np.dtype(self._input.dtype).name} input, "
                f"manifest declares {declared}"
            )
        for spec, what in ((self._input, "input"), (self._output, "output")):
            if spec.dtype not in (np.float32, *QUANTISED_DTYPES):
                raise ManifestError(f"{model_dir}: unsupported {what} dtype {np.dtype(spec.dtype).name}")
            if spec.quantised and spec.scale <= 0:
                raise ManifestError(f"{model_dir}: quantised {what} without a scale")
        self.dynamic_batch = signature[0] == -1
        # A fixed-batch model is fed in chunks of its own batch size.
        self.buckets = batch_buckets(max_batch) if self.dynamic_batch else [shape[0]]
        self._interpreters: dict[int, Any] = {}
        self._adopt(first, shape[0])

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        variant: str = "auto",
        num_threads: int = 1,
        max_batch: int = 32,
        trusted_keys: Sequence[str] | None = None,
    ) -> ModelRunner:
        """Validate signature, manifest, thermal contract and sha256, read the chosen file once, build it.

        `trusted_keys`: the pinned public keys (a serving node always passes them; None skips
        the signature check, for offline evaluation of a model one just trained).
        Raises ManifestError (one line) for anything that must not be served.
        """
        directory = Path(model_dir)
        manifest = load_manifest(directory, verify=True, trusted_keys=trusted_keys)
        check_thermal_contract(manifest, directory)
        chosen = manifest.default_variant if variant == "auto" else variant
        entry = manifest.files.get(chosen)  # type: ignore[call-overload]
        if entry is None:
            raise ManifestError(f"{directory}: manifest has no {chosen} model (has {', '.join(manifest.files)})")
        path = model_file_path(directory, entry)
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read model file: {exc.strerror}") from None
        # Check the bytes we will actually run: the file may have changed since load_manifest read it.
        if sha256_bytes(content) != entry.sha256:
            raise ManifestError(f"{path}: sha256 changed while loading (file being replaced?)")
        return cls(directory, manifest, chosen, content, num_threads=num_threads, max_batch=max_batch)

    def _new_interpreter(self) -> Any:
        try:
            with quiet_native_banner():
                interpreter = self._factory(model_content=self._content, num_threads=self.num_threads)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ManifestError(
                f"{self.model_dir}: {self.variant} model does not load: {' '.join(str(exc).split())}"
            ) from None
        return interpreter

    def _adopt(self, interpreter: Any, batch: int) -> None:
        self._interpreters[batch] = interpreter

    def _interpreter_for(self, batch: int) -> Any:
        interpreter = self._interpreters.get(batch)
        if interpreter is None:
            interpreter = self._new_interpreter()
            interpreter.resize_tensor_input(self._input.index, [batch, *self.manifest.input_shape], strict=True)
            interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return interpreter

    # -- properties ------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(rows, cols) a frame must have."""
        return int(self.manifest.input_shape[0]), int(self.manifest.input_shape[1])

    @property
    def input_dtype(self) -> str:
        return np.dtype(self._input.dtype).name

    @property
    def inconclusive_rule(self) -> InconclusiveRule | None:
        return self.manifest.inconclusive

    # -- scoring ---------------------------------------------------------------------------
    def warm_up(self, sample_c: npt.ArrayLike | None = None) -> None:
        """Run every batch size once on a real 24x32 frame: no set-up cost on the first batch, and proof it answers.

        `sample_c`: a frame in C (the last one the node received); default `reference_frame_c()`.
        Raises ManifestError when the model gives anything but probabilities in 0..1.
        """
        frame = np.asarray(reference_frame_c() if sample_c is None else sample_c, dtype=np.float32)
        if frame.shape != tuple(self.manifest.input_shape[:2]):
            raise ManifestError(f"{self.model_dir}: warm-up frame {frame.shape} does not fit input {self.frame_shape}")
        for batch in self.buckets:
            out = self.predict_celsius(np.broadcast_to(frame, (batch, *frame.shape)))
            if not np.all((out >= 0.0) & (out <= 1.0)):  # also catches NaN
                raise ManifestError(f"{self.model_dir}: warm-up gave {out[:3].tolist()}, not probabilities in 0..1")

    def predict_celsius(self, frames_c: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, H, W) temperatures in C -> (N,) probabilities of labels[1]."""
        return self.predict_preprocessed(preprocess(frames_c, self.manifest.preprocessing))

    def predict_preprocessed(self, x: FloatArray) -> npt.NDArray[np.float64]:
        """(N, H, W, C) model inputs -> (N,) probabilities (an ensemble's combined, calibrated probability)."""
        return self.predict_preprocessed_with_spread(x)[0]

    def predict_celsius_with_spread(
        self, frames_c: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """(N, H, W) in C -> ((N,) probabilities, (N,) member spread in logits, or None for a single model)."""
        return self.predict_preprocessed_with_spread(preprocess(frames_c, self.manifest.preprocessing))

    def predict_preprocessed_with_spread(
        self, x: FloatArray
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """Probabilities and member spread (population std of the members' logits) of model inputs."""
        raw = self._raw(x)
        if self.manifest.ensemble is None and self.manifest.calibration is None:
            return raw[:, 0], None
        # Member logits are clipped like the session rule's probabilities: spreads stay bounded.
        logits = (
            np.clip(raw, -LOGIT_LIMIT, LOGIT_LIMIT) if self.manifest.ensemble is not None else probability_logit(raw)
        )
        z = logits.mean(axis=1)
        spread = logits.std(axis=1) if self.manifest.ensemble is not None else None
        calibration = self.manifest.calibration
        if calibration is not None:
            z = calibration.slope * z + calibration.intercept
        return stable_sigmoid(z), spread

    def _raw(self, x: FloatArray) -> npt.NDArray[np.float64]:
        """(N, H, W, C) -> (N, members) raw outputs, in chunks no larger than the biggest bucket."""
        n = int(x.shape[0])
        out = np.empty((n, self.members), dtype=np.float64)
        largest = self.buckets[-1]
        start = 0
        while start < n:
            count = min(largest, n - start)
            out[start : start + count] = self._invoke(x[start : start + count])
            start += count
        return out

    def _invoke(self, chunk: FloatArray) -> FloatArray:
        count = int(chunk.shape[0])
        batch = next(b for b in self.buckets if b >= count)
        if batch != count:
            padded = np.zeros((batch, *chunk.shape[1:]), dtype=np.float32)
            padded[:count] = chunk
            chunk = padded
        interpreter = self._interpreter_for(batch)
        interpreter.set_tensor(self._input.index, self._input.quantise(np.ascontiguousarray(chunk, dtype=np.float32)))
        interpreter.invoke()
        raw = interpreter.get_tensor(self._output.index)
        result = self._output.dequantise(raw).reshape(batch, self.members)[:count]
        return result
