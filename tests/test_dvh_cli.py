"""``rtnode dvh`` (through a small typer app, as rtnode/cli.py registers it) and the course
outputs the ``dvh`` stage writes."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import typer
from dvh_phantoms import course
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from rtnode.dvh import compute_dvhs, write_course_outputs
from rtnode.dvh.cli import dvh_command
from rtnode.phantom.rt import make_rtstruct
from rtnode.phantom.shapes import Cylinder, Sphere

SHAPES = (Sphere("PTV", interpreted_type="PTV", center=(0.0, 0.0, 0.0), radius=18.0),
          Cylinder("Cord", center=(0.0, 50.0), radius=5.0, z0=-20.0, z1=20.0))
GRAD = (0.1, 0.0, 0.05)

app = typer.Typer()


@app.callback()
def _root() -> None:
    """rtnode"""


app.command("dvh")(dvh_command)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    c = course(GRAD, "default", SHAPES)
    out = tmp_path_factory.mktemp("course")
    for name, ds in (("rs", c.rtstruct), ("rp", c.rtplan), ("rd", c.rtdose), ("ct", c.ct[0])):
        ds.save_as(out / f"{name}.dcm", enforce_file_format=True)
    return out


def test_json_output(folder):
    result = CliRunner().invoke(app, ["dvh", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["seconds"] >= 0
    names = [r["roi_name"] for r in payload["rois"]]
    assert names == ["PTV", "Cord"]
    ptv = payload["rois"][0]
    for key in ("volume_cc", "dmean_gy", "dmin_gy", "dmax_gy", "d98_gy", "d95_gy", "d50_gy",
                "d2_gy", "d_0.03cc_gy", "d_1cc_gy", "v100_rx_pct", "hi", "ci"):
        assert isinstance(ptv[key], float), key
    assert ptv["volume_cc"] == pytest.approx(4 / 3 * 3.14159 * 18 ** 3 / 1000, rel=0.01)
    assert ptv["dmean_gy"] == pytest.approx(60.0, abs=0.01)


def test_csv_and_plot_with_explicit_files_and_reference_engine(folder, tmp_path):
    csv, png = tmp_path / "m.csv", tmp_path / "dvh.png"
    result = CliRunner().invoke(app, [
        "dvh", str(folder), "--rtstruct", str(folder / "rs.dcm"), "--rtdose",
        str(folder / "rd.dcm"), "--rtplan", str(folder / "rp.dcm"), "--engine", "dicompyler",
        "--csv", str(csv), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(csv)
    assert list(frame["roi_name"]) == ["PTV", "Cord"]
    assert set(frame["engine"]) == {"dicompyler"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_output_and_bad_engine(folder):
    result = CliRunner().invoke(app, ["dvh", str(folder)])
    assert result.exit_code == 0, result.output
    assert "PTV" in result.output and "d98_gy" in result.output
    bad = CliRunner().invoke(app, ["dvh", str(folder), "--engine", "eclipse"])
    assert bad.exit_code != 0


def test_mismatched_frame_of_reference_exits_with_a_clear_message(folder, tmp_path):
    import pydicom

    ds = pydicom.dcmread(folder / "rd.dcm")
    ds.FrameOfReferenceUID = generate_uid()
    ds.save_as(tmp_path / "other.dcm", enforce_file_format=True)
    result = CliRunner().invoke(app, ["dvh", str(folder), "--rtdose", str(tmp_path / "other.dcm")])
    assert result.exit_code == 2
    assert "FrameOfReferenceUID" in result.output and ds.FrameOfReferenceUID in result.output


def test_missing_rtdose_is_an_error(tmp_path):
    c = course(GRAD, "default", SHAPES)
    c.rtstruct.save_as(tmp_path / "rs.dcm", enforce_file_format=True)
    result = CliRunner().invoke(app, ["dvh", str(tmp_path), "--json"])
    assert result.exit_code == 2
    assert "no RTDOSE" in result.output


def test_course_outputs_for_manual_and_auto_structure_sets(tmp_path):
    c = course(GRAD, "default", SHAPES)
    auto = make_rtstruct(c.patient, c.ct, SHAPES, label="AUTO", algorithm="AUTOMATIC")
    manual = compute_dvhs(copy.deepcopy(c.rtstruct), c.rtdose, c.rtplan)
    automatic = compute_dvhs(auto, c.rtdose, c.rtplan)
    paths = write_course_outputs([manual, automatic], tmp_path / "course")
    metrics = pd.read_csv(paths["metrics"])
    assert paths["metrics"].name == "dvh_metrics.csv"
    assert sorted(zip(metrics["roi_name"], metrics["source"])) == [
        ("Cord", "auto"), ("Cord", "manual"), ("PTV", "auto"), ("PTV", "manual")]
    curves = pd.read_parquet(paths["curves"])
    assert paths["curves"].name == "dvh_curves.parquet"
    ptv = curves[(curves["roi_name"] == "PTV") & (curves["source"] == "manual")]
    assert ptv["volume_pct"].iloc[0] == pytest.approx(100.0)
    assert ptv["volume_pct"].is_monotonic_decreasing
    steps = ptv["dose_gy"].diff().dropna()
    assert steps.iloc[1:].max() <= 0.01 + 1e-12  # fine bins from the flat part up to Dmax
    dmin = float(metrics[(metrics["roi_name"] == "PTV") & (metrics["source"] == "manual")]
                 ["dmin_gy"].iloc[0])
    assert ptv["dose_gy"].iloc[1] <= dmin < ptv["dose_gy"].iloc[1] + 0.02
    assert paths["plot"].name == "dvh.png" and paths["plot"].stat().st_size > 1000


def test_repeated_rtdose_options_are_reported_each_never_summed(folder, tmp_path):
    """--rtdose twice with two PLAN doses of one plan: nothing says they add, so the newest is
    the plan's dose and nothing is doubled."""
    import pydicom

    ds = pydicom.dcmread(folder / "rd.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "second.dcm", enforce_file_format=True)
    result = CliRunner().invoke(app, ["dvh", str(folder), "--rtdose", str(folder / "rd.dcm"),
                                      "--rtdose", str(tmp_path / "second.dcm"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["rois"][0]["dmean_gy"] == pytest.approx(60.0, abs=0.02)
    assert "2 PLAN doses" in payload["dose_plan"]["words"]


def test_rtplan_option_given_an_rtdose_is_one_clear_line(folder):
    result = CliRunner().invoke(app, ["dvh", str(folder), "--rtplan", str(folder / "rd.dcm")])
    assert result.exit_code == 2
    assert "--rtplan" in result.output and "RTDOSE, not an RTPLAN" in result.output
    assert "Traceback" not in result.output
