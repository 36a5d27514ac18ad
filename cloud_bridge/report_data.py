"""What the doctor's report shows, read from the bridge's archive: sessions, outcomes, asymmetry.

No HTML and no figures here (`report_html`, `report_figures`): this module decides which
sessions a report holds, in which order, what each outcome is called and how left-right
asymmetry is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cloud_bridge.archive import Archive, SessionRecord, VerdictRecord
from contract.messages import ScreeningResult
from contract.wording import RESULT_LABEL, result_of_verdict

VERDICT_FLAGGED = RESULT_LABEL[ScreeningResult.REFER]
VERDICT_CLEAR = RESULT_LABEL[ScreeningResult.NO_FINDING]
VERDICT_INCONCLUSIVE = RESULT_LABEL[ScreeningResult.INCONCLUSIVE]
VERDICT_PENDING = "no session verdict (no frame verdicts were received for this session)"
#: The index's groups, first to last: refer, then repeat the capture (inconclusive), then no finding
#: and sessions without a verdict yet, by time.
INDEX_RANK = {"flagged": 0, "inconclusive": 1, "clear": 2, "pending": 2}


@dataclass(frozen=True)
class Outcome:
    """How a session's verdict is shown: its words, a css class, and its result (None: pending)."""

    wording: str
    css: str
    result: ScreeningResult | None

    @property
    def rank(self) -> int:
        """Its group in the index (INDEX_RANK)."""
        return INDEX_RANK[self.css]


_CSS = {
    ScreeningResult.REFER: "flagged",
    ScreeningResult.INCONCLUSIVE: "inconclusive",
    ScreeningResult.NO_FINDING: "clear",
}


def outcome(session: SessionRecord) -> Outcome:
    """The one place that turns a stored session verdict into what the doctor reads.

    An inconclusive session is neither a referral nor a no finding, whichever side of the
    threshold its probability lies; a row from before the inconclusive rule (None) reads as
    conclusive (contract.wording.result_of_verdict).
    """
    if not session.has_verdict:
        return Outcome(VERDICT_PENDING, "pending", None)
    result = result_of_verdict(flagged=session.flagged, inconclusive=session.inconclusive)
    return Outcome(RESULT_LABEL[result], _CSS[result], result)


@dataclass(frozen=True)
class Asymmetry:
    """Left-right asymmetry of a mean frame over the body region, in K.

    `mean_abs_k`: mean |T - mirror(T)| over the body pixels (mirror about the vertical midline).
    `left_minus_right_k`: mean temperature of the patient's left half minus her right half
    (the camera sees her left on the image's right), over the same pixels; > 0: left warmer.
    """

    mean_abs_k: float
    left_minus_right_k: float
    body_pixels: int


def asymmetry(frame_c: npt.NDArray[np.float32]) -> Asymmetry | None:
    """The asymmetry of a frame, or None when no pixel and its mirror are both on the body.

    Why a body region: the room behind her is cool and nearly uniform, so counting it (as the
    per-frame `frame_stats.asymmetry_c` does) dilutes the number with the framing; a pixel
    counts here when it and its mirror image are both warmer than the frame's mean, which
    keeps the torso and drops the background without a segmentation model. Measured on the
    129 DMR-IR thermograms cut to 24x32 (several per woman, so per thermogram, not per woman):
    mean 0.79 K sick vs 0.65 K healthy, AUC 0.674, against 1.43 vs 1.10 K, AUC 0.654, over the
    whole frame; on 400 synthetic scenes AUC 0.585 vs 0.515. A number for the doctor to follow
    over time, not a validated marker.
    """
    frame = frame_c.astype(np.float64)
    mirrored = frame[:, ::-1]
    body = (frame > frame.mean()) & (mirrored > frame.mean())
    if not body.any():
        return None
    half = frame.shape[1] // 2
    cols = frame.shape[1]
    # body is mirror-symmetric, so both halves hold the same number of pixels.
    left = frame[:, cols - half :][body[:, cols - half :]]
    right = frame[:, :half][body[:, :half]]
    return Asymmetry(
        mean_abs_k=float(np.abs(frame - mirrored)[body].mean()),
        left_minus_right_k=float(left.mean() - right.mean()) if left.size and right.size else 0.0,
        body_pixels=int(body.sum()),
    )


@dataclass(frozen=True)
class SessionData:
    """Everything the report shows about one session."""

    session: SessionRecord
    verdicts: list[VerdictRecord]
    mean_frame: npt.NDArray[np.float32] | None
    frame_count: int

    @property
    def outcome(self) -> Outcome:
        return outcome(self.session)

    @property
    def time_ns(self) -> int | None:
        return self.session.started_ns if self.session.started_ns is not None else self.session.ended_ns

    @property
    def asymmetry(self) -> Asymmetry | None:
        return None if self.mean_frame is None else asymmetry(self.mean_frame)


@dataclass(frozen=True)
class ReportData:
    """The sessions of one report; `patient_ref` set for a patient's history."""

    sessions: list[SessionData]
    patient_ref: str | None = None

    @property
    def patient_refs(self) -> list[str]:
        """Every pseudonym whose data the report shows, sorted."""
        return sorted({s.session.patient_ref for s in self.sessions if s.session.patient_ref})

    @property
    def session_ids(self) -> list[str]:
        return [s.session.session_id for s in self.sessions]


def load_sessions(archive: Archive, session_ids: Sequence[str]) -> list[SessionData]:
    """The report data of each session id, in the order given. Raises LookupError for an unknown id."""
    out = []
    for session_id in session_ids:
        session = archive.session(session_id)
        if session is None:
            raise LookupError(f"session {session_id} is not in the archive {archive.path}")
        frames = archive.frames(session_id)
        mean = frames.temperatures_c.mean(axis=0, dtype=np.float64).astype(np.float32) if len(frames) else None
        out.append(SessionData(session, archive.verdicts(session_id), mean, len(frames)))
    return out


def load_report(
    archive_path: Path, *, session_ids: Sequence[str] | None = None, patient_ref: str | None = None
) -> ReportData:
    """The given sessions, or every session of `patient_ref`, or (neither) every session; newest first
    unless ids are given. Raises LookupError for an unknown session or a patient without sessions."""
    if session_ids is not None and patient_ref is not None:
        raise ValueError("a report is of given sessions or of one patient, not both")
    with Archive(archive_path) as archive:
        if session_ids is None:
            ids = [s.session_id for s in archive.sessions(patient_ref=patient_ref)]
            if patient_ref is not None and not ids:
                raise LookupError(f"patient {patient_ref} has no sessions in the archive {archive_path}")
        else:
            ids = list(session_ids)
        return ReportData(load_sessions(archive, ids), patient_ref)


def index_order(sessions: Sequence[SessionData]) -> list[SessionData]:
    """The index: sessions to refer first, then those to capture again (inconclusive), then no
    finding and those without a verdict yet; newest first within each group."""
    return sorted(sessions, key=lambda s: (s.outcome.rank, -(s.time_ns or 0), s.session.session_id))


def chronological(sessions: Sequence[SessionData]) -> list[SessionData]:
    """Oldest first: the order of a history over time."""
    return sorted(sessions, key=lambda s: (s.time_ns or 0, s.session.session_id))
