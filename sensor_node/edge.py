"""Edge mode: the device scores its own session frames with the LiteRT model and shows a provisional result.

Off unless `[edge] model_dir` is set; then `load_edge_model` needs a TFLite runtime of the
`inference` extra (LiteRT, or the older tflite-runtime) and never falls back to TensorFlow:
it imports the runtime itself first, so contract.model's runner finds it before TensorFlow.
With edge mode off neither LiteRT nor contract.model is imported.

Where the scoring runs: on one worker thread, in batches of `batch_frames` (32) as the
session's frames accumulate, the remainder when the session ends. Measured on the shipped
model (`thermoscreen bench sensor`, 2-core x86 VM shared with other jobs, one LiteRT thread):
0.040 ms CPU per frame one at a time, 0.018 ms in batches of 32; a 5-minute 8 Hz session
(2400 frames) scored all at once at session end takes 55 ms and holds 7 MB of frames plus
14 MB more at its peak, where a batch of 32 holds 100 kB. So the worker costs what an
end-of-session batch costs in CPU, keeps memory bounded on a Pi, and its result is ready at
the end after scoring under one batch (the bench: 3 ms after the ending scan). Capture never
waits for it: frames are handed over without blocking, and beyond `max_pending_frames`
waiting ones a frame is left unscored (counted) rather than delaying capture or publishing.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from contract.messages import ScreeningResult
from contract.session_rule import is_inconclusive, mean_logit_probability
from sensor_node.config import EdgeSettings

if TYPE_CHECKING:
    from contract.model.model_runner import ModelRunner

log = logging.getLogger(__name__)

#: TFLite runtimes the edge mode may use, in contract.model.litert's order; never TensorFlow.
EDGE_RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
INSTALL_HINT = "pip install 'thermoscreen[inference]'"


class EdgeError(ValueError):
    """Edge mode is configured but cannot run (missing extra, bad or unsigned model); one line."""


@dataclass(frozen=True)
class ProvisionalResult:
    """The device's own result for one session: provisional until the cloud's session verdict."""

    session_id: str
    result: ScreeningResult
    probability: float
    threshold: float
    frames: int
    frames_unscored: int
    model_version: str


def require_runtime() -> str:
    """Import a LiteRT runtime (not TensorFlow) and return its module name; EdgeError without one."""
    for name in EDGE_RUNTIMES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    raise EdgeError(f"edge mode ([edge] model_dir) needs the inference extra (LiteRT, not TensorFlow): {INSTALL_HINT}")


def load_edge_model(settings: EdgeSettings) -> ModelRunner:
    """The configured model, signature-checked against the pinned keys and warmed up; EdgeError otherwise."""
    if settings.model_dir is None:
        raise EdgeError("edge mode is off ([edge] model_dir is not set)")
    require_runtime()
    try:
        from contract.model.manifest import ManifestError
        from contract.model.model_runner import ModelRunner
    except ImportError as exc:  # cryptography, for the signature check
        raise EdgeError(f"edge mode needs the inference extra ({exc}): {INSTALL_HINT}") from None
    try:
        runner = ModelRunner.load(
            settings.model_dir,
            variant=settings.variant,
            num_threads=settings.num_threads,
            max_batch=settings.batch_frames,
            trusted_keys=settings.model_public_keys,
        )
        runner.warm_up()
    except (ManifestError, RuntimeError) as exc:
        raise EdgeError(f"[edge] model_dir: {' '.join(str(exc).split())}") from None
    return runner


#: One queued item: a session's frame (temperatures in C), or None for "the session ended".
_Item = tuple[str, "npt.NDArray[np.float32] | None"]


class EdgeScorer:
    """Scores session frames on its own thread and reports each ended session's provisional result."""

    def __init__(
        self, runner: ModelRunner, settings: EdgeSettings, on_result: Callable[[ProvisionalResult], None]
    ) -> None:
        self.runner = runner
        self._batch = settings.batch_frames
        self._max_pending = settings.max_pending_frames
        self._on_result = on_result
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._pending_frames = 0
        self._pending_ends = 0
        self._closing = False
        self._probabilities: dict[str, list[float]] = {}
        #: Member spreads (logits) of an ensemble's frames, per session: the inconclusive rule needs them.
        self._spreads: dict[str, list[float]] = {}
        self._unscored: dict[str, int] = {}
        self.frames_scored = 0
        self.frames_unscored = 0
        self.results = 0
        #: The latest session's result (what the display showed, with its numbers).
        self.last_result: ProvisionalResult | None = None
        self._thread = threading.Thread(target=self._run, name="edge", daemon=True)

    def start(self) -> EdgeScorer:
        self._thread.start()
        return self

    # -- called by the capture and rfid threads: never blocks on scoring -------------------------
    def submit(self, session_id: str, temps_c: npt.NDArray[np.float32]) -> None:
        with self._cond:
            if self._pending_frames >= self._max_pending or self._closing:
                self.frames_unscored += 1
                self._unscored[session_id] = self._unscored.get(session_id, 0) + 1
                return
            self._items.append((session_id, np.asarray(temps_c, dtype=np.float32)))
            self._pending_frames += 1
            if self._pending_frames >= self._batch:
                self._cond.notify()

    def end_session(self, session_id: str) -> None:
        """The session ended: its result is reported once its frames are scored (never dropped)."""
        with self._cond:
            self._items.append((session_id, None))
            self._pending_ends += 1
            self._cond.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        """Score what is queued (ended sessions get their result), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- the worker -----------------------------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        """Wait for a full batch, an ended session or closing; pop up to one batch (through one end)."""
        with self._cond:
            while not (self._pending_frames >= self._batch or self._pending_ends or self._closing):
                self._cond.wait()
            if not self._items:
                return None  # closing and nothing left
            taken: list[_Item] = []
            frames = 0
            while self._items and frames < self._batch:
                item = self._items.popleft()
                taken.append(item)
                if item[1] is None:
                    self._pending_ends -= 1
                    break
                frames += 1
            self._pending_frames -= frames
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            try:
                self._score([item for item in taken if item[1] is not None])
            except Exception as exc:  # a device keeps capturing; these frames stay unscored
                log.error("edge scoring failed: %s: %s", type(exc).__name__, exc)
                with self._cond:
                    for session_id, frame in taken:
                        if frame is not None:
                            self.frames_unscored += 1
                            self._unscored[session_id] = self._unscored.get(session_id, 0) + 1
            for session_id, frame in taken:
                if frame is None:
                    self._finish(session_id)

    def _score(self, frames: list[_Item]) -> None:
        if not frames:
            return
        stacked = np.stack([frame for _, frame in frames if frame is not None])
        probabilities, spreads = self.runner.predict_celsius_with_spread(stacked)
        for (session_id, _), p in zip(frames, probabilities.tolist(), strict=True):
            self._probabilities.setdefault(session_id, []).append(float(p))
        if spreads is not None:
            for (session_id, _), spread in zip(frames, spreads.tolist(), strict=True):
                self._spreads.setdefault(session_id, []).append(float(spread))
        self.frames_scored += len(frames)

    def _result_of(self, probability: float, spreads: list[float]) -> ScreeningResult:
        """The bridge's session outcome on the device's own scores: the contract's rule, band included."""
        rule = self.runner.inconclusive_rule
        spread = sum(spreads) / len(spreads) if spreads else None
        if rule is not None and is_inconclusive(
            probability, spread, rule.band_low, rule.band_high, rule.max_member_spread
        ):
            return ScreeningResult.INCONCLUSIVE
        return ScreeningResult.REFER if probability >= self.runner.threshold else ScreeningResult.NO_FINDING

    def _finish(self, session_id: str) -> None:
        probabilities = self._probabilities.pop(session_id, [])
        spreads = self._spreads.pop(session_id, [])
        with self._cond:
            unscored = self._unscored.pop(session_id, 0)
        probability = mean_logit_probability(probabilities)
        if probability is None:
            log.warning("session %s: no frame scored on the device, so no provisional result", session_id)
            return
        threshold = self.runner.threshold
        result = ProvisionalResult(
            session_id=session_id,
            result=self._result_of(probability, spreads),
            probability=probability,
            threshold=threshold,
            frames=len(probabilities),
            frames_unscored=unscored,
            model_version=self.runner.version,
        )
        self.results += 1
        self.last_result = result
        log.info(
            "session %s: provisional on-device probability %.3f over %d frames (%d unscored), model %s",
            session_id,
            probability,
            result.frames,
            unscored,
            result.model_version,
        )
        try:
            self._on_result(result)
        except Exception:
            log.exception("showing the provisional result of session %s failed", session_id)
