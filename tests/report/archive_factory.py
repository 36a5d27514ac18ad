"""Writes a real bridge archive (through `cloud_bridge.archive.Archive`) with synthetic sessions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud_bridge.archive import Archive, ArchivedFrame, VerdictRecord, compress_centi
from contract.sensor import block_average
from contract.session_rule import RULE_NAME, combine, is_inconclusive
from sensor_node.synthetic_scene import synthetic_thermograms

START_NS = 1_760_000_000_000_000_000
MODEL = "thermal-cnn-test-1"
THRESHOLD = 0.5
#: The inconclusive rule the factory's ensemble verdicts carry (as a trained model's would).
BAND = (0.45, 0.58)
MAX_MEMBER_SPREAD = 0.8


@dataclass(frozen=True)
class SessionSpec:
    session_id: str
    patient_ref: str
    device_id: str
    probabilities: tuple[float, ...]
    with_verdict: bool = True
    with_frames: bool = True
    #: The frames' ensemble member spread; None: a single model, no inconclusive rule in its verdicts.
    member_spread: float | None = None


def write_archive(path: Path, specs: list[SessionSpec], *, seed: int = 7) -> None:
    scenes = synthetic_thermograms(len(specs), seed=seed)["temperature_centi_c"]
    with Archive(path, readonly=False) as archive:
        for i, spec in enumerate(specs):
            start = START_NS + i * 600 * 10**9
            frame_c = block_average(scenes[i].astype(np.float32) / 100.0)
            rng = np.random.default_rng(seed + i)
            archive.put_session_start(
                session_id=spec.session_id, device_id=spec.device_id, patient_ref=spec.patient_ref, started_ns=start
            )
            verdicts, frames = [], []
            # Frame and verdict keys are (device, incarnation, seq): sessions on one device need their own seqs.
            for j, p in enumerate(spec.probabilities):
                seq = i * 1000 + j
                capture = start + (j + 1) * 500_000_000
                noisy = frame_c + rng.normal(0, 0.1, frame_c.shape).astype(np.float32)
                frames.append(
                    ArchivedFrame(
                        device_id=spec.device_id,
                        seq=seq,
                        session_id=spec.session_id,
                        patient_ref=spec.patient_ref,
                        capture_ns=capture,
                        rows=24,
                        cols=32,
                        ambient_c=24.0,
                        centi_zlib=compress_centi(np.round(noisy * 100).astype(np.int16)),
                    )
                )
                ensemble = spec.member_spread is not None
                verdicts.append(
                    VerdictRecord(
                        device_id=spec.device_id,
                        seq=seq,
                        session_id=spec.session_id,
                        patient_ref=spec.patient_ref,
                        capture_ns=capture,
                        probability=p,
                        flagged=p >= THRESHOLD,
                        threshold=THRESHOLD,
                        model_version=MODEL,
                        node_id="infer-1",
                        latency_ms=3.0,
                        member_spread=spec.member_spread,
                        band_low=BAND[0] if ensemble else None,
                        band_high=BAND[1] if ensemble else None,
                        max_member_spread=MAX_MEMBER_SPREAD if ensemble else None,
                        inconclusive=ensemble and is_inconclusive(p, spec.member_spread, *BAND, MAX_MEMBER_SPREAD),
                    )
                )
            if spec.with_frames:
                archive.put_frames(frames)
            end = start + (len(spec.probabilities) + 1) * 500_000_000
            archive.put_session_end(
                session_id=spec.session_id,
                device_id=spec.device_id,
                patient_ref=spec.patient_ref,
                ended_ns=end,
                frames_reported=len(spec.probabilities),
                end_reason="card",
            )
            if spec.with_verdict:
                archive.put_verdicts(verdicts)
                combined = combine([v.as_verdict() for v in verdicts])
                assert combined is not None
                archive.put_session_verdict(
                    session_id=spec.session_id,
                    device_id=spec.device_id,
                    patient_ref=spec.patient_ref,
                    frames=combined.frames,
                    probability=combined.probability,
                    flagged=combined.flagged,
                    threshold=combined.threshold,
                    rule=RULE_NAME,
                    model_version=combined.model_version,
                    verdict_ns=end + 10**9,
                    member_spread=combined.member_spread,
                    inconclusive=combined.inconclusive,
                )
        archive.commit()


FLAGGED = SessionSpec("a" * 32, "0123456789abcdef", "dev-01", tuple(0.55 + 0.3 * (i % 5) / 5 for i in range(20)))
CLEAR = SessionSpec("b" * 32, "fedcba9876543210", "dev-02", tuple(0.05 + 0.2 * (i % 4) / 4 for i in range(16)))
PENDING = SessionSpec("c" * 32, "00112233445566ff", "dev-01", (0.4,) * 4, with_verdict=False, with_frames=False)
#: Near the threshold under the ensemble's rule: "inconclusive: repeat the capture" (probability >= threshold).
INCONCLUSIVE = SessionSpec(
    "e" * 32, "0a0b0c0d0e0f1011", "dev-02", tuple(0.5 + 0.06 * (i % 3) / 3 for i in range(12)), member_spread=0.3
)
