"""Run any exported `.tflite` file (thermal or IDC) through the inference node's runtime, not Keras.

Used right after export to check the files against Keras. The runtime is the one
`contract.model.litert.interpreter_factory` picks (LiteRT, then tflite_runtime, then tf.lite).
Int8 models get their input quantised and their output dequantised with the scale and zero
point the interpreter reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.model.litert import interpreter_factory


class TfliteModel:
    """A loaded `.tflite` with one input and one output; `predict` takes float input, returns float output."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such model file")
        try:
            factory, _ = interpreter_factory()
            self.interpreter = factory(model_path=str(file), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{file}: not a loadable .tflite model ({exc})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = int(self.input["shape"][0])

    @property
    def input_dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = np.dtype(self.input["dtype"])
        return dtype

    def _quantize(self, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        scale, zero_point = self.input["quantization"]
        if self.input_dtype == np.float32 or not scale:
            same: npt.NDArray[Any] = x.astype(self.input_dtype)
            return same
        info = np.iinfo(self.input_dtype)
        quantized: npt.NDArray[Any] = np.clip(np.round(x / scale + zero_point), info.min, info.max)
        return quantized.astype(self.input_dtype)

    def _dequantize(self, y: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        scale, zero_point = self.output["quantization"]
        raw = np.asarray(y)
        if np.dtype(self.output["dtype"]) == np.float32 or not scale:
            return raw.astype(np.float32)
        return ((raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """(N, *input_shape) float -> (N, *output_shape) float, in one invocation per batch."""
        batch = np.asarray(x, dtype=np.float32)
        expected = tuple(int(v) for v in self.input["shape"][1:])
        if batch.shape[1:] != expected:
            raise ValueError(f"model input is {expected}, got {batch.shape[1:]}")
        if batch.shape[0] == 0:
            return np.zeros((0, *self.output["shape"][1:]), dtype=np.float32)
        if batch.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], [batch.shape[0], *expected])
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch = batch.shape[0]
        self.interpreter.set_tensor(self.input["index"], self._quantize(batch))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self.output["index"]))
