"""The qc stage reads the dvh stage's outputs of the revision instead of recomputing DVHs, and
takes what the rule requires into its verdict."""

from __future__ import annotations

import json
from pathlib import Path

from rtnode.courses.grouping import Member
from rtnode.phantom.asymmetric import asymmetric_course
from rtnode.stages.base import StageContext


def members_in(storage: Path, datasets) -> list[Member]:
    out = []
    for n, ds in enumerate(datasets):
        rel = Path("dicom") / f"{ds.Modality}_{n:04d}.dcm"
        (storage / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(storage / rel, enforce_file_format=True)
        out.append(Member(ds.SOPInstanceUID, ds.SOPClassUID, ds.Modality, ds.SeriesInstanceUID,
                          ds.StudyInstanceUID, str(getattr(ds, "FrameOfReferenceUID", "")),
                          str(rel), "2026-01-01T00:00:00+00:00",
                          attrs={"ImagePositionPatient": list(ds.ImagePositionPatient)}
                          if ds.Modality == "CT" else {}))
    return out


def context(storage: Path, members, out: Path, **kw) -> StageContext:
    from rtnode.config import Config

    return StageContext(course_id=7, patient_id="ASYM_HFS", revision=1, members=members,
                        verdict={"complete": True, "missing": []}, storage_root=storage,
                        out_dir=out, config=Config(), **kw)


def test_qc_stage_uses_the_dvh_stage_outputs(tmp_path):
    from rtnode.stages.dvh import compute_course_dvh
    from rtnode.stages.qc import course_for_qc, run_qc

    c = asymmetric_course("HFS")
    members = members_in(tmp_path, c.datasets)
    dvh_dir = tmp_path / "courses" / "7" / "r1" / "dvh"
    compute_course_dvh(context(tmp_path, members, dvh_dir, rule={}))
    assert (dvh_dir / "dvh_metrics.csv").is_file()

    qc_dir = tmp_path / "courses" / "7" / "r1" / "qc"
    ctx = context(tmp_path, members, qc_dir, rule={}, upstream={"dvh": dvh_dir})
    course = course_for_qc(ctx)
    from rtnode.qc.run import run_checks

    checks = {c.id: c for c in run_checks(course)}
    assert checks["dose_coverage"].status == "pass"
    assert "_computed_dvh" not in course.__dict__  # QC did not compute a DVH
    run_qc(ctx)
    html = (qc_dir / "report.html").read_text()
    assert "DVH numbers dvh stage" in html
    doc = json.loads((qc_dir / "qc.json").read_text())
    assert doc["status"] == "pass", doc


def test_a_rule_requiring_dose_makes_a_course_without_it_unfit(tmp_path):
    from rtnode.stages.qc import run_qc

    c = asymmetric_course("HFS")
    members = members_in(tmp_path, [*c.ct, c.rtstruct])
    ctx = context(tmp_path, members, tmp_path / "qc",
                  rule={"match": {"modalities": ["CT", "RTSTRUCT"], "has_rtdose": True}})
    run_qc(ctx)
    doc = json.loads((tmp_path / "qc" / "qc.json").read_text())
    required = next(x for x in doc["checks"] if x["id"] == "required_checks")
    assert doc["status"] == "fail" and "dose_units (no RTDOSE)" in required["reason"]
