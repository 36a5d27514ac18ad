"""`thermoscreen report`: the HTML a doctor opens, checked in real headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_bridge.archive import Archive, SessionRecord
from cloud_bridge.report import (
    DISCLAIMER,
    VERDICT_CLEAR,
    VERDICT_FLAGGED,
    VERDICT_INCONCLUSIVE,
    VERDICT_PENDING,
    SessionData,
    load_sessions,
    outcome,
    render_html,
)
from cloud_bridge.report_data import index_order
from contract.messages import ScreeningResult
from contract.wording import RESULT_LABEL
from tests.report.archive_factory import CLEAR, FLAGGED, INCONCLUSIVE, MODEL, PENDING, write_archive
from tests.report.browser import find_chromium, load_page

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/system-deps.sh installs it on Debian)"
)


def run_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="module")
def archive_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "archive.sqlite"
    write_archive(path, [FLAGGED, CLEAR, PENDING])
    return path


@pytest.fixture(scope="module")
def full_report(archive_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = run_report("--all", "--archive", str(archive_path), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "report": str(out),
        "sessions": [PENDING.session_id, CLEAR.session_id, FLAGGED.session_id],
        "patients": sorted({FLAGGED.patient_ref, CLEAR.patient_ref, PENDING.patient_ref}),
        "names": [],
    }
    return out


def test_single_session_report_content(archive_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.html"
    result = run_report("--session", FLAGGED.session_id, "--archive", str(archive_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert FLAGGED.patient_ref in text and FLAGGED.device_id in text
    assert f"Session verdict: <strong>{VERDICT_FLAGGED}</strong>" in text
    assert f"Session verdict: <strong>{VERDICT_CLEAR}</strong>" not in text
    assert MODEL in text
    assert text.count("Screening aid, not a diagnosis") + text.count("screening aid, not a diagnosis") >= 2
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 2
    # Self-contained: nothing but data: URIs and links within the page is referenced.
    assert not re.search(r'(src|href)="(?!data:|#)', text)


def test_session_verdict_wording(archive_path: Path) -> None:
    with Archive(archive_path) as archive:
        sessions = load_sessions(archive, [FLAGGED.session_id, CLEAR.session_id, PENDING.session_id])
    assert [s.session.flagged for s in sessions] == [True, False, None]
    text = render_html(sessions, generated_ns=0, archive_name="a.sqlite")
    for wording in (VERDICT_FLAGGED, VERDICT_CLEAR, VERDICT_PENDING):
        assert wording in text
    assert "No frames of this session are in the archive." in text  # PENDING has neither frames nor verdicts


def test_unknown_session_and_missing_archive_are_one_line_errors(archive_path: Path, tmp_path: Path) -> None:
    result = run_report("--session", "d" * 32, "--archive", str(archive_path), "--out", str(tmp_path / "x.html"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"thermoscreen report: error: session {'d' * 32} is not in the archive {archive_path}"
    ]
    assert not (tmp_path / "x.html").exists()

    result = run_report("--all", "--archive", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "x.html"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "archive not found" in result.stderr

    result = run_report("--session", "not-a-session", "--archive", str(archive_path))
    assert result.returncode == 2
    assert "invalid session id 'not-a-session'" in result.stderr

    result = run_report("--all", "--archive", str(archive_path), "--out", str(tmp_path / "x.pdf"))
    assert result.returncode == 2
    assert "--out must be an .html file" in result.stderr


@needs_chromium
@pytest.mark.server
def test_report_renders_in_chromium(full_report: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    page = load_page(CHROMIUM, full_report, tmp_path / "profile")
    (tmp_path / "report.png").write_bytes(page.screenshot)

    assert page.errors == []
    assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == []
    # FLAGGED and CLEAR have a heatmap and a probability plot each; PENDING has neither.
    assert len(page.images) == 4
    for image in page.images:
        assert image["complete"] and image["scheme"] == "data"
        assert image["width"] > 300 and image["height"] > 200, image
    assert page.title.startswith("thermoscreen screening report")
    assert DISCLAIMER.split(". ")[0] in page.text
    assert VERDICT_FLAGGED in page.text and VERDICT_CLEAR in page.text
    assert page.screenshot.startswith(b"\x89PNG")


@needs_chromium
@pytest.mark.server
def test_browser_check_sees_broken_pages(tmp_path: Path) -> None:
    """The checker is not blind: a script error, a console error and a blocked external image show up."""
    assert CHROMIUM is not None
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; script-src 'unsafe-inline'\"></head><body>"
        '<img src="http://127.0.0.1:9/x.png" alt="external">'
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    page = load_page(CHROMIUM, bad, tmp_path / "profile")
    assert page.images[0]["width"] == 0
    joined = "\n".join(page.errors)
    assert "boom" in joined
    assert "undefinedFunction" in joined or "Uncaught" in joined
    assert "Content Security Policy" in joined or "csp" in joined.lower()


def test_report_is_private_even_under_a_loose_umask(archive_path: Path, tmp_path: Path) -> None:
    """A report names a woman's screening: 0600, and a directory made for it 0700, whatever the umask."""
    import os
    import stat

    from cloud_bridge.report import write_report

    out = tmp_path / "reports" / "one.html"
    old = os.umask(0)
    try:
        write_report(archive_path, [FLAGGED.session_id], out, now_ns=0)
        out.chmod(0o644)  # a restored copy: rewriting it makes it private again
        write_report(archive_path, [FLAGGED.session_id], out, now_ns=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in out.parent.iterdir()) == ["one.html"]


def _record(session_id: str, *, flagged: bool | None, inconclusive: bool | None, t: int) -> SessionRecord:
    has_verdict = flagged is not None
    return SessionRecord(
        session_id=session_id, device_id="dev-01", patient_ref="0123456789abcdef", started_ns=t, ended_ns=t + 1,
        frames_reported=4, end_reason="card", frames=4 if has_verdict else None,
        probability=(0.6 if flagged else 0.2) if has_verdict else None, flagged=flagged,
        threshold=0.5 if has_verdict else None, rule="mean-logit-v1" if has_verdict else None,
        model_version=MODEL if has_verdict else None, verdict_ns=t + 2 if has_verdict else None,
        member_spread=None, inconclusive=inconclusive,
    )  # fmt: skip


def test_inconclusive_is_its_own_outcome_and_old_rows_read_as_conclusive() -> None:
    """Inconclusive overrides the side of the threshold; a row from before the rule (None) keeps
    its refer / no finding; the index: refer, then inconclusive, then the rest, newest first."""
    rows = {
        "old-refer": _record("1" * 32, flagged=True, inconclusive=None, t=1),
        "old-clear": _record("2" * 32, flagged=False, inconclusive=None, t=2),
        "unsure-above": _record("3" * 32, flagged=True, inconclusive=True, t=3),
        "unsure-below": _record("4" * 32, flagged=False, inconclusive=True, t=4),
        "refer": _record("5" * 32, flagged=True, inconclusive=False, t=5),
        "pending": _record("6" * 32, flagged=None, inconclusive=None, t=6),
    }
    wording = {name: outcome(row).wording for name, row in rows.items()}
    assert wording == {
        "old-refer": VERDICT_FLAGGED,
        "old-clear": VERDICT_CLEAR,
        "unsure-above": VERDICT_INCONCLUSIVE,
        "unsure-below": VERDICT_INCONCLUSIVE,
        "refer": VERDICT_FLAGGED,
        "pending": VERDICT_PENDING,
    }
    assert VERDICT_INCONCLUSIVE == RESULT_LABEL[ScreeningResult.INCONCLUSIVE] == "inconclusive: repeat the capture"
    sessions = [SessionData(row, [], None, 0) for row in rows.values()]
    order = [d.session.session_id[0] for d in index_order(sessions)]
    assert order == ["5", "1", "4", "3", "6", "2"]


def test_inconclusive_session_section_shows_its_wording_and_member_spread(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    write_archive(path, [INCONCLUSIVE, CLEAR])
    with Archive(path) as archive:
        sessions = load_sessions(archive, [INCONCLUSIVE.session_id, CLEAR.session_id])
    unsure, clear = sessions
    assert unsure.session.inconclusive is True and unsure.session.flagged is True
    assert clear.session.inconclusive is False and clear.session.member_spread is None
    text = render_html(sessions, generated_ns=0, archive_name="a.sqlite")
    assert f'<p class="verdict inconclusive">Session verdict: <strong>{VERDICT_INCONCLUSIVE}</strong>' in text
    assert f"<th>Ensemble member spread (mean over frames)</th><td>{INCONCLUSIVE.member_spread:.3f}</td>" in text
    assert text.count("Ensemble member spread") == 1  # the single-model session has none
    assert f"<strong>{VERDICT_FLAGGED}</strong>" not in text  # though its probability reached the threshold
