"""QC on phantom courses with known defects: each defect gives exactly its own finding, the clean
course gives none, and report.html renders in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rtnode.phantom.qc_course import Defects, write_qc_course
from rtnode.qc.cli import qc_command
from rtnode.qc.course import folder_course
from rtnode.qc.run import run_checks, write_qc
from rtnode.qc.surface import dice, hd95

CLEAN = Defects(False, False, False, False)
ALL = Defects()
EXPECTED = {
    "missing_slice": {("ct_missing_slices", "fail"), ("rtstruct_references", "fail")},
    "empty_roi": {("roi_contours", "warn")},
    "laterality_swap": {("autoseg_laterality", "fail")},
    "dose_misses_roi": {("dose_coverage", "fail")},
}


def findings(checks) -> set[tuple[str, str]]:
    return {(c.id, c.status) for c in checks if c.status in ("warn", "fail")}


@pytest.fixture(scope="module")
def defect_course(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qc_defects")
    write_qc_course(folder, ALL)
    return folder


def test_clean_course_has_no_findings(tmp_path):
    write_qc_course(tmp_path, CLEAN)
    checks = run_checks(folder_course(tmp_path))
    assert findings(checks) == set()
    statuses = {c.id: c.status for c in checks}
    # the checks that can apply did run and pass
    for check_id in ("ct_missing_slices", "rtstruct_references", "roi_contours",
                     "dose_coverage", "autoseg_laterality", "auto_vs_manual", "prescription",
                     "dose_units", "autoseg_volumes", "roi_inside_image"):
        assert statuses[check_id] == "pass", check_id


@pytest.mark.parametrize("defect", sorted(EXPECTED))
def test_each_defect_gives_exactly_its_own_findings(tmp_path, defect):
    write_qc_course(tmp_path, Defects(**{k: k == defect for k in EXPECTED}))
    assert findings(run_checks(folder_course(tmp_path))) == EXPECTED[defect]


def test_all_defects_together_and_their_reasons(defect_course):
    checks = {c.id: c for c in run_checks(folder_course(defect_course))}
    assert findings(checks.values()) == set().union(*EXPECTED.values())
    assert checks["ct_missing_slices"].reason.startswith("1 slice(s) missing in the 2.5 mm")
    assert "Empty_ROI (manual)" in checks["roi_contours"].reason
    assert "Rectum 0 %" in checks["dose_coverage"].reason
    lat = checks["autoseg_laterality"].reason
    assert "Kidney_L lies on the patient's right" in lat
    assert "Kidney_R lies on the patient's left" in lat
    # auto 'spleen' matched manual 'Spleen' by name: same contours, Dice 1
    assert checks["auto_vs_manual"].details[0]["dice"] == pytest.approx(1.0)


def test_name_map_pairs_differently_named_rois(defect_course):
    from rtnode.qc.autoseg_checks import pairs
    from rtnode.qc.config import QCConfig

    course = folder_course(defect_course)
    assert pairs(course, QCConfig()) == [("spleen", "Spleen")]
    mapped = pairs(course, QCConfig(name_map={"Kidney_L": "Rectum"}))
    assert ("Kidney_L", "Rectum") in mapped


def test_dice_and_surface_distance_of_shifted_cubes():
    a = np.zeros((20, 20, 20), bool)
    a[5:15, 5:15, 5:15] = True
    b = np.roll(a, 2, axis=2)
    assert dice(a, a) == 1.0 and hd95(a, a, (1, 1, 1)) == 0.0
    assert dice(a, b) == pytest.approx(0.8)
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(4.0)  # 2 voxels of 2 mm along x
    assert dice(a, np.zeros_like(a)) == 0.0


def test_qc_command_writes_json_and_report_and_fails_on_defects(defect_course, tmp_path):
    app = typer.Typer()
    app.command()(qc_command)
    out = tmp_path / "qc"
    result = CliRunner().invoke(app, [str(defect_course), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "FAIL  ct_missing_slices" in result.output
    doc = json.loads((out / "qc.json").read_text())
    assert doc["status"] == "fail" and doc["counts"]["fail"] == 4 and doc["counts"]["warn"] == 1
    assert doc["patient_id"] == "QCDEFECT"
    html = (out / "report.html").read_text()
    assert "NOT fit for analysis" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained

    missing = CliRunner().invoke(app, [str(tmp_path / "nowhere"), "--out", str(out)])
    assert missing.exit_code == 2 and "is not a folder" in missing.output


def test_report_renders_in_headless_chromium(defect_course, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed for this test"
    write_qc(folder_course(defect_course), tmp_path / "qc")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-sync", "--no-proxy-server",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
                    f"--screenshot={shot}", (tmp_path / "qc" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 200, "screenshot is blank or nearly so"
    # the red verdict banner (#d93025) and the overlay images are drawn
    red = np.all(np.abs(pixels.astype(int) - [0xD9, 0x30, 0x25]) < 8, axis=2)
    assert red.sum() > 5000
    dark = (pixels.sum(axis=2) < 60).sum()  # the air around the phantom in the CT overlays
    assert dark > 10000


@pytest.mark.parametrize("tps_step_gy, expected", [(60.0, "pass"), (50.0, "fail")])
def test_computed_dvh_against_the_tps_dvh_sequence(tmp_path, tps_step_gy, expected):
    """The phantom dose is a uniform 60 Gy: every ROI's cumulative DVH is a step at 60 Gy. A TPS
    DVH with that step agrees; one with its step at 50 Gy is off by 100 % of the volume."""
    from pydicom.sequence import Sequence

    from rtnode.phantom.dvhseq import make_dvh_item
    from rtnode.phantom.qc_course import qc_course

    datasets = qc_course(CLEAN, patient_id="QCTPS")
    rtdose = datasets[-1]
    doses = np.arange(0.0, 70.0, 0.7)  # no bin edge at exactly 60 Gy
    volumes = np.where(doses <= tps_step_gy, 4.19, 0.0)  # GTV: 4/3·π·1.0³ cc
    rtdose.DVHSequence = Sequence([make_dvh_item(1, doses, volumes)])  # ROI 1 = GTV
    for n, ds in enumerate(datasets):
        ds.save_as(tmp_path / f"{ds.Modality}_{n:04d}.dcm", enforce_file_format=True)
    checks = {c.id: c for c in run_checks(folder_course(tmp_path))}
    assert checks["dvh_vs_tps"].status == expected, checks["dvh_vs_tps"].reason
    assert checks["dvh_vs_tps"].details[0]["roi_name"] == "GTV"
    if expected == "fail":
        assert checks["dvh_vs_tps"].reason.startswith("GTV: ΔV up to 100.0 %")
