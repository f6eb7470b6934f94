"""Contours: even-odd rasterisation, slab convention, degenerate contours, ROIs off the dose
grid and empty ROIs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from dvh_phantoms import course, metrics_by_name, slice_positions
from pydicom.dataset import Dataset

from rtnode.dvh import compute_dvhs
from rtnode.dvh.rasterize import rasterize_plane
from rtnode.dvh.structures import assign_slabs, read_rois
from rtnode.phantom.dvh_truth import LinearField, stack_dvh
from rtnode.phantom.rt import DoseGrid, make_rtdose
from rtnode.phantom import linear_dose
from rtnode.phantom.shapes import Sphere

GRAD = (0.0, 0.1, 0.0)
SHAPES = (Sphere("Target", interpreted_type="PTV", center=(0.0, 0.0, 0.0), radius=15.0),
          Sphere("Far", center=(0.0, 0.0, 500.0), radius=5.0),  # no contour on any slice
          Sphere("Edge", center=(100.0, 0.0, 0.0), radius=12.0))


@pytest.fixture(scope="module")
def base():
    return course(GRAD, "default", SHAPES)


def square(x0, y0, side):
    return np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]])


@pytest.mark.parametrize("h", [0.1, 0.37, 1.0])
def test_even_odd_fill_of_holes_and_several_contours(h):
    """Nested contour = hole, disjoint contours add, crossing contours keep only the
    symmetric difference — exact areas for axis-aligned squares on any lattice pitch."""
    outer, inner, other = square(0, 0, 10), square(3, 3, 4), square(20, 0, 5)
    assert rasterize_plane([outer, inner], h).area_mm2()[0] == pytest.approx(100 - 16, rel=0.02)
    assert rasterize_plane([outer, other], h).area_mm2()[0] == pytest.approx(125, rel=0.02)
    crossing = square(5, 5, 10)  # overlaps outer by 25 mm²
    assert rasterize_plane([outer, crossing], h).area_mm2()[0] == pytest.approx(150, rel=0.02)


def test_slabs_reach_half_way_to_neighbouring_slices(base):
    rois = read_rois(base.rtstruct)
    assign_slabs(rois, 2.5)
    target = rois[0]
    zs = [p.z for p in target.planes]
    assert all(p.thickness == pytest.approx(2.5) for p in target.planes)
    assert target.planes[0].z_lo == pytest.approx(zs[0] - 1.25)
    assert target.planes[-1].z_hi == pytest.approx(zs[-1] + 1.25)
    res = compute_dvhs(base.rtstruct, base.rtdose)
    assert metrics_by_name(res)["Target"]["volume_cc"] == pytest.approx(
        target.stack_volume_mm3() / 1000, rel=2e-3)


def _contour(points_xyz, kind="CLOSED_PLANAR") -> Dataset:
    item = Dataset()
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(points_xyz)
    item.ContourData = [f"{v:g}" for p in points_xyz for v in p]
    return item


def test_degenerate_contours_are_skipped_and_counted(base):
    rs = copy.deepcopy(base.rtstruct)
    seq = rs.ROIContourSequence[0].ContourSequence
    z = float(seq[0].ContourData[2])
    seq.append(_contour([(0, 0, z), (5, 0, z)]))                          # 2 points
    seq.append(_contour([(1, 1, z), (1, 1, z), (1, 1, z), (1, 1, z)]))     # one repeated point
    seq.append(_contour([(0, 0, z), (5, 0, z), (5, 5, z)], "OPEN_PLANAR"))  # open contour
    seq.append(_contour([(0, 0, z), (1, 1, z), (2, 2, z)]))                # collinear
    clean = metrics_by_name(compute_dvhs(base.rtstruct, base.rtdose))["Target"]
    res = compute_dvhs(rs, base.rtdose)
    row = metrics_by_name(res)["Target"]
    assert row["skipped_contours"] == 4
    assert row["volume_cc"] == pytest.approx(clean["volume_cc"], rel=1e-9)
    assert row["d50_gy"] == pytest.approx(clean["d50_gy"], abs=1e-9)
    assert any("Target" in n and "skipped" in n for n in res.notes)


def test_repeated_vertices_are_dropped_not_the_contour(base):
    rs = copy.deepcopy(base.rtstruct)
    for item in rs.ROIContourSequence[0].ContourSequence:
        data = list(item.ContourData)
        item.ContourData = data[:3] + data + data[:3]  # duplicate first point, close explicitly
    row = metrics_by_name(compute_dvhs(rs, base.rtdose))["Target"]
    ref = metrics_by_name(compute_dvhs(base.rtstruct, base.rtdose))["Target"]
    assert row["skipped_contours"] == 0
    assert row["volume_cc"] == pytest.approx(ref["volume_cc"], rel=1e-9)


def test_roi_partly_outside_the_dose_grid_is_flagged_with_its_covered_fraction(base):
    """Dose grid ends at x = 100 mm, through the centre of the Edge sphere: half of it is
    covered (to within the half-cell strip, ~0.24 mm of 24, that a lattice cell centre decides);
    its dose metrics describe the covered half."""
    grid = DoseGrid(origin=(-60.0, -60.0, -55.0), spacing=(2.5, 2.5, 2.5), shape=(45, 49, 65))
    assert grid.axes()[0][-1] == pytest.approx(100.0)
    dose = make_rtdose(base.patient, base.rtplan, grid, linear_dose(60.0, GRAD))
    res = compute_dvhs(base.rtstruct, dose)
    edge = metrics_by_name(res)["Edge"]
    assert edge["partly_outside_dose"] is True
    assert edge["dose_coverage"] == pytest.approx(0.5, abs=0.02)
    assert edge["covered_cc"] == pytest.approx(edge["volume_cc"] * edge["dose_coverage"])
    assert edge["dmean_gy"] == pytest.approx(60.0, abs=0.01)  # y-gradient, symmetric half
    assert metrics_by_name(res)["Target"]["partly_outside_dose"] is False
    assert any("Edge" in n and "inside the dose grid" in n for n in res.notes)


def test_roi_entirely_off_the_grid_does_not_crash(base):
    grid = DoseGrid(origin=(-60.0, -60.0, -55.0), spacing=(2.5, 2.5, 2.5), shape=(45, 49, 30))
    dose = make_rtdose(base.patient, base.rtplan, grid, linear_dose(60.0, GRAD))
    edge = metrics_by_name(compute_dvhs(base.rtstruct, dose))["Edge"]
    assert edge["dose_coverage"] == 0.0
    assert edge["partly_outside_dose"] is True
    assert edge["volume_cc"] > 6.0
    assert math.isnan(edge["d50_gy"]) and math.isnan(edge["dmean_gy"])


def test_empty_roi_is_reported_not_computed(base):
    res = compute_dvhs(base.rtstruct, base.rtdose)
    far = metrics_by_name(res)["Far"]
    assert far["empty"] is True
    assert far["volume_cc"] == 0.0
    assert math.isnan(far["dmean_gy"])
    assert any("Far" in n and "empty" in n for n in res.notes)
    payload = res.to_json_dict()
    far_json = next(r for r in payload["rois"] if r["roi_name"] == "Far")
    assert far_json["dmean_gy"] is None  # NaN is not JSON


def test_stack_truth_helper_matches_engine_volume(base):
    """The test truth and the engine agree on what the contour stack is."""
    truth = stack_dvh(SHAPES[0], slice_positions(), LinearField(60.0, GRAD))
    row = metrics_by_name(compute_dvhs(base.rtstruct, base.rtdose))["Target"]
    assert row["volume_cc"] == pytest.approx(truth.volume_mm3 / 1000, rel=2e-3)


def test_chunks_of_planes_give_the_same_dvh(base, monkeypatch):
    """Large ROIs are processed a few planes at a time to bound memory; the result must not
    depend on the chunking."""
    from rtnode.dvh import engine

    whole = metrics_by_name(compute_dvhs(base.rtstruct, base.rtdose))["Target"]
    monkeypatch.setattr(engine, "CHUNK_CELLS", 20_000)
    chunked = metrics_by_name(compute_dvhs(base.rtstruct, base.rtdose))["Target"]
    for key in ("volume_cc", "dmin_gy", "dmax_gy", "dmean_gy", "d98_gy", "d50_gy", "d2_gy"):
        assert chunked[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-9), key
