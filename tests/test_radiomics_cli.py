"""``rtnode radiomics PATH --out FILE.csv`` on a folder of one course's files, no node running;
and the MR parameter file on an MR-like image."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import typer
from typer.testing import CliRunner

from radiomics_phantoms import radiomics_course, sphere_image
from rtnode.phantom.rt import make_rtstruct
from rtnode.radiomics.cli import radiomics_command
from rtnode.radiomics.extract import extract_roi
from rtnode.radiomics.params import load_params, params_path


def app() -> typer.Typer:
    a = typer.Typer()
    a.command()(radiomics_command)
    return a


def test_radiomics_command_on_a_course_folder(tmp_path):
    course = radiomics_course("CLI1")
    # the same contours again as an auto-segmentation: every ROI AUTOMATIC
    auto = make_rtstruct(course.patient, course.ct, course.shapes[:2], label="AUTOSEG",
                         series_number=5, algorithm="AUTOMATIC")
    folder = tmp_path / "course"
    course.write(folder)
    auto.save_as(folder / "RTSTRUCT_auto.dcm", enforce_file_format=True)
    out = tmp_path / "features.csv"
    r = CliRunner().invoke(app(), [str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out)
    assert sorted(zip(table["source"], table["roi_name"])) == [
        ("auto", "GTV"), ("auto", "PTV"), ("manual", "GTV"), ("manual", "Lung_L"),
        ("manual", "Lung_R"), ("manual", "PTV")]
    assert set(table["patient_id"]) == {"CLI1"}
    by = table.set_index(["source", "roi_name"])
    # the same contours give the same features, whichever structure set they came from
    assert by.loc[("auto", "GTV"), "original_shape_MeshVolume"] == \
        by.loc[("manual", "GTV"), "original_shape_MeshVolume"]
    assert by.loc[("manual", "GTV"), "original_shape_MeshVolume"] == pytest.approx(
        4 / 3 * math.pi * 10**3, rel=0.05)
    status = pd.read_csv(tmp_path / "features_status.csv").set_index("roi_name")
    assert status.loc["BODY", "reason"] == "matches skip_rois"


def test_radiomics_command_errors_are_readable(tmp_path):
    r = CliRunner().invoke(app(), [str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "is not a folder" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app(), [str(tmp_path / "empty"), "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "no CT, MR or PT image series" in r.output


def test_mr_parameters_normalise_intensities():
    """MR intensities are arbitrary: with the MR file, scaling the whole image by 3 leaves the
    (z-score normalised) first-order and texture features where they were."""
    image, mask = sphere_image(12.0, hu=0.0)
    rng = np.random.default_rng(1)
    arr = (500.0 + 50.0 * rng.standard_normal(mask.shape)).astype(np.float32)
    arr[mask] += 200.0
    a = sitk.GetImageFromArray(arr)
    b = sitk.GetImageFromArray(arr * 3.0)
    mr = load_params(params_path("MR"))
    fa, fb = extract_roi(a, mask, mr), extract_roi(b, mask, mr)
    for f in ("original_firstorder_Mean", "original_firstorder_Skewness",
              "original_glcm_Contrast"):
        assert fa[f] == pytest.approx(fb[f], rel=1e-3), f
