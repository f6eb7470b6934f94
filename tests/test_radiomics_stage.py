"""The radiomics (and qc) stages in a real node: storescu sends a phantom course, the stage
fans its ROIs out as a few balanced cpu-queue parts, and the index's timestamps show the parts
running side by side; a ROI past its time limit fails alone while the others land in
radiomics.csv."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from peers import store_responses, storescu
from radiomics_phantoms import radiomics_course
from rtnode.radiomics.course import part_rois
from test_courses import settled, stage

pytestmark = pytest.mark.network

RULES = """rules:
  - {name: research, stages: [manifest, radiomics, qc]}
"""


def interval(s: dict) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(s["started_at"]), dt.datetime.fromisoformat(s["finished_at"])


def overlaps(a: dict, b: dict) -> bool:
    (a0, a1), (b0, b1) = interval(a), interval(b)
    return a0 < b1 and b0 < a1


def test_balanced_parts_run_in_parallel_and_a_slow_roi_times_out_alone(node_factory, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "research.yaml").write_text(RULES)
    node = node_factory(stages={"plugins": ["rtnode.stages.radiomics",
                                            "rtnode.stages.qc"],
                                "timeouts": {"radiomics": 10}},
                        courses={"rules_dir": str(rules)},
                        # three workers (qc may hold one the whole time), one part per worker
                        workers={"cpu_workers": 3, "parts_per_worker": 1})
    course = radiomics_course("RADIO1", slow_roi=True)  # "Huge" needs ~12 s alone
    files = course.write(tmp_path / "course")
    r = storescu(node.port, files)
    assert store_responses(r.stdout) == ["Success"] * len(files)

    c = node.wait_courses(settled, timeout=180)[0]
    runs = {s["part"]: s for s in c["stages"] if s["stage"] == "radiomics"}
    rois = ["manual:Huge", "manual:GTV", "manual:PTV", "manual:Lung_L", "manual:Lung_R"]
    parts = [s for s in c["stages"] if s["stage"] == "radiomics" and s["part"]]
    # 3 workers x workers.parts_per_worker 1 = 3 parts for 5 ROIs (BODY is skipped by name),
    # balanced by contoured area: the huge cylinder alone, queued first
    assert len(parts) == 3
    held = [part_rois(s["part"]) for s in parts]
    assert sorted(r for group in held for r in group) == sorted(rois)
    first = parts[0]  # stage runs are listed in the order they were made
    assert part_rois(first["part"]) == ["manual:Huge"]
    # contoured volume (cc): PTV 17, Lung_L and Lung_R 7 each, GTV 4 -> PTV alone beside the rest
    assert sorted(map(sorted, held)) == [["manual:GTV", "manual:Lung_L", "manual:Lung_R"],
                                         ["manual:Huge"], ["manual:PTV"]]
    assert all(s["queue"] == "cpu" for s in runs.values())
    huge = runs["manual:Huge"]
    assert huge["state"] == "failed"
    # the ROI's own 10 s limit, or the part's 30 s (2 x 10 s per ROI + 10 s), by the part's
    # deadline or, when pyradiomics' C code held on past it, by the watchdog killing the process
    assert huge["reason"] in ("RoiFailed: ROI 'Huge' timed out after 10 s",
                              "timed out after 30 s", "timed out after 30 s (worker killed)")
    others = [s for s in parts if s is not huge]
    assert all(s["state"] == "done" for s in others), others
    assert any(overlaps(a, b) for i, a in enumerate(parts) for b in parts[i + 1:]), \
        "the parts of one course did not run in parallel"
    parent = runs[""]
    assert parent["state"] == "done" and parent["reason"] == "1 of 3 part(s) failed"
    assert parent["finished_at"] >= max(p["finished_at"] for p in parts)
    assert stage(c, "manifest")["state"] == "done"
    assert stage(c, "qc")["state"] == "done"

    out = Path(c["output_dir"])
    table = pd.read_csv(out / "radiomics.csv")
    assert sorted(table["roi_name"]) == ["GTV", "Lung_L", "Lung_R", "PTV"]
    assert set(table["source"]) == {"manual"}
    assert set(table["patient_id"]) == {"RADIO1"} and set(table["course_id"]) == {c["id"]}
    assert "original_shape_MeshVolume" in table and "original_glcm_Contrast" in table
    gtv = table.set_index("roi_name").loc["GTV"]
    # contours rasterised on a 2 x 2 x 2.5 mm grid, then resampled to 1 mm: a few % of volume
    assert gtv["original_shape_MeshVolume"] == pytest.approx(4 / 3 * math.pi * 10**3, rel=0.05)
    assert gtv["original_firstorder_Mean"] == pytest.approx(40.0, abs=1.0)  # insert HU
    status = pd.read_csv(out / "radiomics_status.csv").set_index("roi_name")
    assert status.loc["Huge", "state"] == "failed"
    assert status.loc["Huge", "reason"] in ("ROI 'Huge' timed out after 10 s",
                                            "timed out after 30 s",
                                            "timed out after 30 s (worker killed)")
    assert status.loc["BODY", "state"] == "skipped"
    assert status.loc["BODY", "reason"] == "matches skip_rois"

    qc = json.loads((out / "qc.json").read_text())
    assert qc["course_id"] == c["id"] and qc["patient_id"] == "RADIO1"
    checks = {x["id"]: x for x in qc["checks"]}
    assert checks["course_completeness"]["status"] == "pass"  # the detector's verdict reached QC
    assert checks["ct_missing_slices"]["status"] == "pass"
    assert checks["dose_coverage"]["status"] == "pass"
    assert (out / "report.html").stat().st_size > 10_000
