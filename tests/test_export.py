"""Cohort export from a real node: three phantom courses run dvh, radiomics, robustness and
qc; the export has one DVH row per ROI, one radiomics row per extracted ROI and one QC row per
course, each with patient/course/plan identifiers, as xlsx (read back with pandas), csv and
parquet."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from peers import store_responses, storescu
from radiomics_phantoms import radiomics_course
from test_courses import settled
from rtnode.export import export_command

pytestmark = pytest.mark.network

RULES = "rules:\n  - {name: research, stages: [manifest, dvh, radiomics, robustness, qc]}\n"


@pytest.fixture(scope="module")
def cohort_node(tmp_path_factory):
    from peers import NodeProcess, write_config

    folder = tmp_path_factory.mktemp("export_node")
    (folder / "rules").mkdir()
    (folder / "rules" / "r.yaml").write_text(RULES)
    node = NodeProcess(write_config(
        folder, stages={"plugins": ["rtnode.stages.radiomics", "rtnode.stages.robustness",
                            "rtnode.stages.qc"]},
        courses={"rules_dir": str(folder / "rules")}, workers={"cpu_workers": 2})).start()
    try:
        for i in range(3):
            files = radiomics_course(f"EXP{i + 1}").write(folder / f"c{i}")
            r = storescu(node.port, files)
            assert store_responses(r.stdout) == ["Success"] * len(files)
        node.wait_courses(lambda cs: settled(cs, 3), timeout=240)
        yield node
    finally:
        node.stop()


def run_export(node, *args: str):
    app = typer.Typer()
    app.command()(export_command)
    return CliRunner().invoke(app, [*args, "--config", str(node.config)])


def test_three_courses_to_xlsx_with_right_row_counts(cohort_node, tmp_path):
    out = tmp_path / "cohort.xlsx"
    r = run_export(cohort_node, "--out", str(out))
    assert r.exit_code == 0, r.output
    sheets = pd.read_excel(out, sheet_name=None)
    assert set(sheets) == {"dvh", "radiomics", "qc"}
    dvh, rad, qc = sheets["dvh"], sheets["radiomics"], sheets["qc"]
    assert len(dvh) == 3 * 5  # GTV, PTV, Lung_L, Lung_R, BODY per course
    assert len(rad) == 3 * 4  # BODY is skipped by name
    assert len(qc) == 3
    for frame in (dvh, rad, qc):
        assert sorted(frame["patient_id"].unique()) == ["EXP1", "EXP2", "EXP3"]
        assert {"course_id", "revision", "study_uid", "plan_labels", "plan_uids"} <= set(frame)
    assert set(dvh["plan_labels"]) == {"PLAN1"}
    assert "original_shape_MeshVolume" in rad and "dmean_gy" in dvh
    assert set(qc["qc_status"]) == {"pass"} and set(qc["ct_missing_slices"]) == {"pass"}


def test_csv_and_parquet_one_file_per_table_and_filters(cohort_node, tmp_path):
    ids = sorted(c["id"] for c in cohort_node.courses())
    r = run_export(cohort_node, "--out", str(tmp_path / "two.csv"), "--courses", str(ids[0]),
                   "--courses", str(ids[2]))
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "two_radiomics.csv")) == 8
    assert len(pd.read_csv(tmp_path / "two_qc.csv")) == 2

    r = run_export(cohort_node, "--out", str(tmp_path / "all.parquet"))
    assert r.exit_code == 0, r.output
    assert len(pd.read_parquet(tmp_path / "all_dvh.parquet")) == 15

    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    r = run_export(cohort_node, "--out", str(tmp_path / "none.csv"), "--since", tomorrow)
    assert r.exit_code == 0 and "0 course(s)" in r.output

    bad = run_export(cohort_node, "--out", str(tmp_path / "x.txt"))
    assert bad.exit_code == 2 and "--out must end in" in bad.output
    bad = run_export(cohort_node, "--out", str(tmp_path / "x.csv"), "--courses", "999")
    assert bad.exit_code == 2 and "no course with id 999" in bad.output
    bad = run_export(cohort_node, "--out", str(tmp_path / "x.csv"), "--since", "last week")
    assert bad.exit_code == 2 and "is not a date" in bad.output


def test_robustness_stage_wrote_an_icc_per_feature_for_every_course(cohort_node):
    from pathlib import Path

    for c in cohort_node.courses():
        runs = {s["part"]: s for s in c["stages"] if s["stage"] == "robustness"}
        assert set(runs) == {"", "manual:GTV", "manual:PTV"}  # roi_patterns GTV*, CTV*, PTV*
        assert all(s["state"] == "done" for s in runs.values()), runs
        table = pd.read_csv(Path(c["output_dir"]) / "radiomics_robustness.csv")
        assert (table["n_rois"] == 2).all() and (table["n_perturbations"] == 5).all()
        icc = table.set_index("feature")["icc"]
        assert icc["original_shape_MeshVolume"] < 1.0
        assert set(table["robust"]) <= {True, False}
