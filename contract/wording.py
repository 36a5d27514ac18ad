"""How each `ScreeningResult` is worded wherever a result is shown: one definition.

The device's console line, the live demo view, the HTML report and the Grafana dashboards all
read these, so "inconclusive" cannot be called one thing on the device and another in the
report. The words are a screening aid's: never "healthy" or "sick"; "no finding" does not
rule anything out, and "inconclusive" asks for a new capture, not a referral.
"""

from __future__ import annotations

from contract.messages import ScreeningResult

#: The short label of each result (report index, dashboards' value mappings, the live view).
RESULT_LABEL: dict[ScreeningResult, str] = {
    ScreeningResult.REFER: "refer for follow-up",
    ScreeningResult.NO_FINDING: "no finding",
    ScreeningResult.INCONCLUSIVE: "inconclusive: repeat the capture",
}

#: The sentence the device shows (and any place that shows a result on its own line).
RESULT_SENTENCE: dict[ScreeningResult, str] = {
    ScreeningResult.REFER: "refer for clinical follow-up (a screening aid, not a diagnosis)",
    ScreeningResult.NO_FINDING: "no finding (a screening aid, not a diagnosis: it does not rule anything out)",
    ScreeningResult.INCONCLUSIVE: "inconclusive: repeat the capture (a screening aid, not a diagnosis)",
}

#: The disclaimer beside every shown result (report, dashboards), naming each outcome's meaning.
DISCLAIMER = (
    "thermoscreen is a screening aid, not a diagnosis. "
    f"\u201c{RESULT_LABEL[ScreeningResult.REFER].capitalize()}\u201d means refer for a clinical breast "
    "examination and, where indicated, imaging; "
    f"\u201c{RESULT_LABEL[ScreeningResult.NO_FINDING]}\u201d does not rule anything out; "
    f"\u201c{RESULT_LABEL[ScreeningResult.INCONCLUSIVE]}\u201d means the model could not decide "
    "(its members disagree or the probability lies near the threshold): capture the session again."
)


def result_of_verdict(*, flagged: bool | None, inconclusive: bool | None) -> ScreeningResult:
    """The result of a stored or received session verdict; `inconclusive` None (a row written
    before the inconclusive rule existed) reads as conclusive."""
    if inconclusive:
        return ScreeningResult.INCONCLUSIVE
    return ScreeningResult.REFER if flagged else ScreeningResult.NO_FINDING
