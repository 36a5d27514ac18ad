"""`thermoscreen report --patient`: a woman's history for the doctor, names only with the registry.

Checked in real headless Chromium: the index lists sessions to refer for follow-up first, then
the inconclusive ones (repeat the capture), then the rest; the history chart has one point per
session with a verdict (an inconclusive one an amber diamond), the file names its patients in <meta>
for erasure, names appear only when the registry (and its key and a reason) was given, and that
report is appended to the registry's audit log. The registry is a real one made by `thermoscreen
patients enrol`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clinic.audit import default_audit_path, verify
from cloud_bridge.report import PATIENT_META, VERDICT_CLEAR, VERDICT_FLAGGED, VERDICT_INCONCLUSIVE, asymmetry
from cloud_bridge.report_figures import CLEAR_COLOUR, FLAGGED_COLOUR, INCONCLUSIVE_COLOUR
from cloud_bridge.report_html import PSEUDONYMS_ONLY
from contract.ids import make_patient_ref
from contract.messages import ScreeningResult
from tests.report.archive_factory import SessionSpec, write_archive
from tests.report.browser import find_chromium, load_page

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/system-deps.sh installs it on Debian)"
)
UID = "04:a2:2b:19"
NAME = "Ama Mensah"
CLINIC_ID = "K-1"
SHOWN_NAME = f"{NAME} (clinic id {CLINIC_ID})"
OTHER_REF = "fedcba9876543210"
REFER = tuple(0.55 + 0.3 * (i % 5) / 5 for i in range(12))
CLEAR = tuple(0.05 + 0.2 * (i % 4) / 4 for i in range(10))
#: Near the threshold (inside the ensemble's inconclusive band), some frames on each side of it.
UNSURE = tuple(0.47 + 0.08 * (i % 3) / 2 for i in range(9))
SPREAD = 0.31

#: The rendered page as the doctor sees it: index links, chart points (with their drawn size), metas.
PROBE = """JSON.stringify({
  index: Array.from(document.querySelectorAll('nav.index tbody a')).map(a => a.getAttribute('href')),
  points: Array.from(document.querySelectorAll('figure.history svg g[id^="point-"]')).map(g => {
    const box = g.getBBox(); const mark = g.querySelector('use');
    return {id: g.id, width: box.width, height: box.height, fill: getComputedStyle(mark).fill,
            shape: document.querySelector(mark.getAttribute('xlink:href')).getAttribute('d')}; }),
  outcomes: Array.from(document.querySelectorAll('nav.index tbody tr')).map(r => r.className),
  metas: Array.from(document.querySelectorAll('meta[name="thermoscreen-patient"]')).map(m => m.content),
  strip: Array.from(document.querySelectorAll('img.strip')).map(i => i.naturalWidth),
})"""


@dataclass(frozen=True)
class Site:
    """A clinic: keys, a registry with one enrolled woman, and an archive of screenings."""

    env: dict[str, str]
    registry: Path
    archive: Path
    ref: str
    specs: list[SessionSpec]

    @property
    def audit(self) -> Path:
        return default_audit_path(self.registry)

    def of(self, ref: str) -> list[SessionSpec]:
        return [s for s in self.specs if s.patient_ref == ref]


def thermoscreen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermoscreen", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("site")
    registry_key, site_key = os.urandom(32), os.urandom(16)
    env = {**os.environ, "THERMOSCREEN_REGISTRY_KEY": registry_key.hex(), "THERMOSCREEN_SITE_KEY": site_key.hex()}
    registry = root / "clinic" / "patients.sqlite"
    enrol = thermoscreen(
        "patients", "enrol", "--registry", str(registry), "--uid", UID, "--name", NAME, "--dob", "1980-02-03",
        "--clinic-id", CLINIC_ID, "--json", env=env,
    )  # fmt: skip
    assert enrol.returncode == 0, enrol.stderr
    ref = make_patient_ref(bytes.fromhex(UID.replace(":", "")), site_key)
    assert json.loads(enrol.stdout)["patient_ref"] == ref
    # In time order (the factory starts session i at i * 10 minutes).
    specs = [
        SessionSpec("1" * 32, ref, "dev-01", REFER),
        SessionSpec("2" * 32, ref, "dev-02", CLEAR),
        SessionSpec("3" * 32, OTHER_REF, "dev-02", CLEAR),
        SessionSpec("4" * 32, ref, "dev-01", REFER),
        SessionSpec("5" * 32, ref, "dev-01", (0.4,) * 4, with_verdict=False, with_frames=False),
        SessionSpec("6" * 32, ref, "dev-02", UNSURE, member_spread=SPREAD),
    ]
    archive = root / "archive.sqlite"
    write_archive(archive, specs)
    return Site(env, registry, archive, ref, specs)


def _rgb(colour: str) -> str:
    """A #rrggbb colour as the browser's computed style writes it."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def audit_lines(site: Site) -> list[dict[str, object]]:
    if not site.audit.exists():
        return []
    return [json.loads(line) for line in site.audit.read_text().splitlines()]


@needs_chromium
@pytest.mark.server
def test_patient_history_renders_with_pseudonyms_only(site: Site, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    out = tmp_path / "history.html"
    before = audit_lines(site)
    done = thermoscreen("report", "--patient", site.ref, "--archive", str(site.archive), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "report": str(out),
        "sessions": ["6" * 32, "5" * 32, "4" * 32, "2" * 32, "1" * 32],
        "patients": [site.ref],
        "names": [],
    }
    page = load_page(CHROMIUM, out, tmp_path / "profile", probe=PROBE)
    (tmp_path / "history.png").write_bytes(page.screenshot)

    assert page.errors == []
    assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == []
    # Refer for follow-up first (newest first), then inconclusive (though the newest, and though its
    # probability reached the threshold), then the rest by time: the pending one is newer than the clear one.
    assert page.probed["index"] == [f"#session-{c * 32}" for c in "41652"]
    assert page.probed["outcomes"] == ["flagged", "flagged", "inconclusive", "pending", "clear"]
    # One drawn point per session with a session verdict; the pending one is said to be missing.
    points = page.probed["points"]
    assert [p["id"] for p in points] == [f"point-{c * 32}" for c in "1246"]
    assert all(p["width"] > 0 and p["height"] > 0 for p in points), points
    fills = [p["fill"] for p in points]
    assert fills == [_rgb(FLAGGED_COLOUR), _rgb(CLEAR_COLOUR), _rgb(FLAGGED_COLOUR), _rgb(INCONCLUSIVE_COLOUR)]
    shapes = [p["shape"] for p in points]
    assert shapes[0] == shapes[1] == shapes[2] != shapes[3]  # the inconclusive one is its own marker
    # Inconclusive in the index, its section and her history table; its member spread shown.
    assert page.text.count(VERDICT_INCONCLUSIVE) >= 3, page.text
    assert f"Session verdict: {VERDICT_INCONCLUSIVE}" in page.text
    assert f"Ensemble member spread (mean over frames)\t{SPREAD:.3f}" in page.text
    assert "amber diamond: inconclusive, repeat the capture" in page.text
    assert "1 session(s) without a session verdict are not plotted" in page.text
    assert page.probed["metas"] == [site.ref]
    assert len(page.probed["strip"]) == 1 and page.probed["strip"][0] > 600  # four mean frames side by side
    assert "screening aid, not a diagnosis" in page.text
    assert VERDICT_FLAGGED in page.text and VERDICT_CLEAR in page.text
    for word in ("healthy", "sick", "cancer"):
        assert word not in page.text.lower()
    assert "Asymmetry |L \u2212 mirrored R| (K)" in page.text
    assert PSEUDONYMS_ONLY in page.text
    assert NAME not in out.read_text() and CLINIC_ID not in page.text
    assert OTHER_REF not in out.read_text()
    assert audit_lines(site) == before  # a report without names is not a disclosure: nothing logged


@needs_chromium
@pytest.mark.server
def test_names_only_with_the_registry_and_every_such_report_audited(site: Site, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    before = audit_lines(site)
    out = tmp_path / "named.html"
    reason = "follow-up of a flagged screening"
    done = thermoscreen(
        "report", "--patient", site.ref, "--archive", str(site.archive), "--out", str(out), "--registry",
        str(site.registry), "--reason", reason, "--actor", "dr-osei", "--json", env=site.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["names"] == [site.ref]
    page = load_page(CHROMIUM, out, tmp_path / "profile", probe=PROBE)
    assert page.errors == []
    assert SHOWN_NAME in page.text
    assert f"Patient {site.ref} \u00b7 {SHOWN_NAME}" in page.text
    assert PSEUDONYMS_ONLY not in page.text
    assert page.probed["metas"] == [site.ref]
    assert "1980-02-03" not in out.read_text()  # the name and clinic id, nothing more

    after = audit_lines(site)
    assert len(after) == len(before) + 1
    line = after[-1]
    assert line["action"] == "report" and line["patient_ref"] == site.ref
    assert line["actor"] == "dr-osei" and line["reason"] == reason
    assert line["detail"] == {"sessions": [f"{c * 32}" for c in "65421"], "report": str(out.resolve())}
    assert NAME not in site.audit.read_text()
    assert verify(site.audit) == len(after)


def test_all_sessions_with_the_registry_names_only_the_enrolled(site: Site, tmp_path: Path) -> None:
    before = len(audit_lines(site))
    out = tmp_path / "all.html"
    done = thermoscreen(
        "report", "--all", "--archive", str(site.archive), "--out", str(out), "--registry", str(site.registry),
        "--reason", "monthly review", env=site.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert re.findall(rf'<meta name="{PATIENT_META}" content="([0-9a-f]+)">', text) == sorted([site.ref, OTHER_REF])
    assert f"{site.ref} \u00b7 {SHOWN_NAME}" in text
    assert f"patient {OTHER_REF}</h2>" in text  # not enrolled here: her pseudonym only
    lines = audit_lines(site)[before:]
    assert [(line["action"], line["patient_ref"]) for line in lines] == [("report", site.ref)]
    assert len(lines[0]["detail"]["sessions"]) == len(site.of(site.ref))  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patient", "0" * 16], "patient 0000000000000000 has no sessions in the archive"),
        (["--patient", "Ama"], "--patient 'Ama': expected a pseudonym, 16 hex digits"),
        (["--patient", "{ref}", "--registry", "{registry}"], "--registry needs --reason"),
        (["--patient", "{ref}", "--reason", "why"], "--reason goes with --registry"),
        (["--patient", "{ref}", "--registry", "{registry}", "--reason", "x", "--key-file", "{bad_key}"],
         "wrong registry key"),
        (["--patient", "{ref}", "--registry", "{missing}", "--reason", "x"], "no registry at"),
    ],
    ids=["unknown-patient", "bad-pseudonym", "registry-without-reason", "reason-without-registry", "wrong-key",
         "no-registry"],
)  # fmt: skip
def test_errors_are_one_line_exit_2_and_write_nothing(
    site: Site, tmp_path: Path, args: list[str], message: str
) -> None:
    bad_key = tmp_path / "other.key"
    bad_key.write_text(os.urandom(32).hex())
    fill = {
        "ref": site.ref,
        "registry": str(site.registry),
        "bad_key": str(bad_key),
        "missing": str(tmp_path / "no.sqlite"),
    }
    out = tmp_path / "x.html"
    before = audit_lines(site)
    done = thermoscreen(
        "report", *[a.format(**fill) for a in args], "--archive", str(site.archive), "--out", str(out), env=site.env
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermoscreen report: error: ") and message in lines[0], lines
    assert done.stdout == ""
    assert not out.exists()
    assert audit_lines(site) == before


def _block_frame(warm_image_right_k: float) -> np.ndarray:
    """A 24x32 frame: room at 22 C, a torso block at 33 C, its image-right half warmer by `warm`."""
    frame = np.full((24, 32), 22.0, dtype=np.float32)
    frame[4:20, 8:24] = 33.0
    frame[4:20, 16:24] += warm_image_right_k
    return frame


def test_asymmetry_is_measured_over_the_body_and_says_which_side() -> None:
    symmetric = asymmetry(_block_frame(0.0))
    assert symmetric is not None and symmetric.mean_abs_k == 0.0 and symmetric.left_minus_right_k == 0.0
    assert symmetric.body_pixels == 16 * 16  # the room does not count
    # The camera sees her left on the image's right: warming there is her left warmer (> 0).
    left_warm = asymmetry(_block_frame(0.5))
    assert left_warm is not None
    assert left_warm.mean_abs_k == pytest.approx(0.5) and left_warm.left_minus_right_k == pytest.approx(0.5)
    right_warm = asymmetry(_block_frame(-0.5))
    assert right_warm is not None and right_warm.left_minus_right_k == pytest.approx(-0.5)
    assert asymmetry(np.full((24, 32), 30.0, dtype=np.float32)) is None  # nothing warmer than the mean


def test_history_chart_of_a_single_session_is_inline_svg_with_its_point() -> None:
    from cloud_bridge.report_figures import HistoryPoint, history_svg

    svg = history_svg([HistoryPoint("a" * 32, 1_760_000_000 * 10**9, 0.7, 0.5, ScreeningResult.REFER)])
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert re.findall(r'<g id="(point-[0-9a-f]+)"', svg) == ["point-" + "a" * 32]
    assert "<?xml" not in svg and "DOCTYPE" not in svg  # inlined into the HTML page
