"""Reported doses bounded by the dose grid; any axis-aligned dose grid orientation; contours off
the CT stack; exact areas of axis-aligned rectangles."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from dvh_phantoms import metrics_by_name
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from rtnode.dvh import DVHConfig, DVHInputError, compute_dvhs
from rtnode.dvh.dose import DoseVolume
from rtnode.dvh.engine import compute_roi_dvh
from rtnode.dvh.structures import ContourPlane, StructureROI, assign_slabs, read_rois
from rtnode.phantom import CTGeometry, PhantomCourse, linear_dose
from rtnode.phantom.rt import ORIENTATIONS, DoseGrid, make_rtdose
from rtnode.phantom.shapes import Cylinder, EllipticBody, Sphere
from rtnode.rtstruct.reader import ReadReport, read_rtstruct_masks

GEOMETRY = CTGeometry(rows=48, columns=48, pixel_spacing=(4.0, 4.0), slices=30,
                      slice_spacing=2.5)
SHAPES = [Sphere("PTV", interpreted_type="PTV", center=(0.0, 0.0, 0.0), radius=15.0),
          Sphere("Hot", interpreted_type="ORGAN", center=(1.0, -2.0, 1.5), radius=6.0),
          Cylinder("Ridge", center=(20.0, 20.0), radius=8.0, z0=-20.0, z1=20.0),
          EllipticBody(semi_x=90.0, semi_y=80.0)]


@pytest.fixture(scope="module")
def base():
    return PhantomCourse(geometry=GEOMETRY, shapes=SHAPES,
                         dose=linear_dose(10.0, (0.05, -0.08, 0.03))).build()


def _grid(base) -> DoseGrid:
    return base.default_dose_grid()


def _peaked(base, kind: str):
    """A dose that is 0 except on one voxel (hot) or one column of voxels along z (ridge)."""
    grid = _grid(base)
    xs, ys, zs = grid.axes()
    i = int(np.argmin(np.abs(xs - (20.0 if kind == "ridge" else 0.0))))
    j = int(np.argmin(np.abs(ys - (20.0 if kind == "ridge" else 0.0))))
    k = int(np.argmin(np.abs(zs)))

    def dose(x, y, z):
        near_x, near_y = np.isclose(x, xs[i]), np.isclose(y, ys[j])
        hit = near_x & near_y & (np.isclose(z, zs[k]) if kind == "hot" else True)
        return np.where(hit, 20.0, 0.0)

    return make_rtdose(base.patient, base.rtplan, grid, dose)


@pytest.mark.parametrize("kind, roi", [("hot", "Hot"), ("hot", "PTV"), ("ridge", "Ridge"),
                                       ("ridge", "BODY")])
def test_doses_stay_within_the_dose_grid(base, kind, roi):
    rtdose = _peaked(base, kind)
    grid_max = float(rtdose.pixel_array.max()) * float(rtdose.DoseGridScaling)
    res = compute_dvhs(base.rtstruct, rtdose, base.rtplan)
    row = metrics_by_name(res)[roi]
    assert row["dmax_gy"] <= grid_max + 1e-9
    assert row["d_0.03cc_gy"] <= grid_max + 1e-9
    assert row["dmin_gy"] >= 0.0
    assert row["dmax_gy"] > 0.5  # the peak is inside the ROI and seen
    assert 0.0 <= row["dmean_gy"] <= row["dmax_gy"]
    r = next(x for x in res.rois if x.roi_name == roi)
    assert r.dvh.doses[np.nonzero(r.dvh.volume_cc)[0][-1]] <= grid_max


@pytest.mark.parametrize("position", sorted(ORIENTATIONS))
def test_every_axial_orientation_gives_the_hfs_dvh(base, position):
    """The same dose written in decubitus, prone and feet-first pixel order: equal DVHs."""
    z = [float(d.ImagePositionPatient[2]) for d in base.ct]
    hfs = metrics_by_name(compute_dvhs(base.rtstruct, base.rtdose, base.rtplan,
                                       slice_positions=z))
    other = make_rtdose(base.patient, base.rtplan, _grid(base), base.dose,
                        orientation=ORIENTATIONS[position])
    got = metrics_by_name(compute_dvhs(base.rtstruct, other, base.rtplan, slice_positions=z))
    for name, row in hfs.items():
        for key in ("dmean_gy", "d98_gy", "d2_gy", "dmax_gy", "dmin_gy"):
            assert got[name][key] == pytest.approx(row[key], abs=0.01), (position, name, key)


def test_a_decubitus_course_gives_the_same_dvhs_as_hfs(tmp_path):
    """HFDL through the whole course: CT, dose grid and the dvh folder entry point."""
    from rtnode.dvh import dvh_for_folder

    hfs = PhantomCourse(geometry=GEOMETRY, shapes=SHAPES, dose=base_dose()).build()
    hfs.write(tmp_path / "hfs")
    hfdl = copy.deepcopy(hfs)
    for ds in hfdl.ct:
        ds.PatientPosition = "HFDL"
    hfdl.rtdose = make_rtdose(hfs.patient, hfs.rtplan, hfs.default_dose_grid(), hfs.dose,
                              orientation=ORIENTATIONS["HFDL"])
    hfdl.write(tmp_path / "hfdl")
    a = metrics_by_name(dvh_for_folder(tmp_path / "hfs"))
    b = metrics_by_name(dvh_for_folder(tmp_path / "hfdl"))
    assert pydicom.dcmread(next((tmp_path / "hfdl").glob("RTDOSE*"))) \
        .ImageOrientationPatient == list(ORIENTATIONS["HFDL"])
    for name in a:
        for key in ("dmean_gy", "d98_gy", "d50_gy", "d2_gy", "volume_cc"):
            assert b[name][key] == pytest.approx(a[name][key], abs=0.01), (name, key)


def base_dose():
    return linear_dose(10.0, (0.05, -0.08, 0.03))


def test_an_oblique_dose_grid_is_one_clear_error(base):
    oblique = copy.deepcopy(base.rtdose)
    c, s = np.cos(0.3), np.sin(0.3)
    oblique.ImageOrientationPatient = [c, s, 0.0, -s, c, 0.0]
    with pytest.raises(DVHInputError) as info:
        compute_dvhs(base.rtstruct, oblique, base.rtplan)
    message = str(info.value)
    assert "oblique" in message and "np.float64" not in message
    assert "0.955336" in message  # the values as DICOM writes them


def _roi_with_contour_at(base, z: float) -> Dataset:
    """The course's RTSTRUCT plus an ROI whose only contour lies at z."""
    ds = copy.deepcopy(base.rtstruct)
    number = 99
    item = Dataset()
    item.ROINumber, item.ROIName = number, "Stray"
    item.ReferencedFrameOfReferenceUID = ds.FrameOfReferenceUID
    item.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence.append(item)
    square = np.array([[-15, -15], [15, -15], [15, 15], [-15, 15]], dtype=float)
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 4
    contour.ContourData = [f"{v:g}" for v in np.column_stack([square, np.full(4, z)]).ravel()]
    rc = Dataset()
    rc.ReferencedROINumber = number
    rc.ROIDisplayColor = [0, 255, 0]
    rc.ContourSequence = DicomSequence([contour])
    ds.ROIContourSequence.append(rc)
    return ds


@pytest.mark.parametrize("where, kept", [("on_slice", True), ("between", True),
                                         ("off_stack", False)])
def test_engine_and_rtstruct_reader_agree_on_a_lone_contour(base, where, kept):
    """A single contour on a CT slice, between two slices (goes to the nearest) or beyond the
    stack (skipped by both, never an invented slab)."""
    z_slices = [float(d.ImagePositionPatient[2]) for d in base.ct]
    z = {"on_slice": z_slices[10], "between": z_slices[10] + 1.0,
         "off_stack": max(z_slices) + 23.4}[where]
    rtstruct = _roi_with_contour_at(base, z)
    report = ReadReport()
    masks = read_rtstruct_masks(rtstruct, base.ct, ["Stray"], report=report)
    reader_cc = float(masks["Stray"].sum()) * 4.0 * 4.0 * 2.5 / 1000.0
    res = compute_dvhs(rtstruct, base.rtdose, base.rtplan, slice_positions=z_slices)
    row = metrics_by_name(res)["Stray"]
    if kept:
        assert row["volume_cc"] == pytest.approx(30 * 30 * 2.5 / 1000.0, rel=1e-6)
        assert reader_cc == pytest.approx(row["volume_cc"], rel=0.3)  # pixel-centre masks
        assert row["skipped_contours"] == 0 and "Stray" not in report.skipped
    else:
        assert row["volume_cc"] == 0.0 and row["skipped_contours"] == 1
        assert reader_cc == 0.0 and report.skipped["Stray"] == 1
        assert any("off the CT slice stack" in n for n in res.notes)


@pytest.mark.parametrize("w, h", [(40.0, 40.0), (13.3, 7.1), (61.7, 22.9), (3.3, 2.1)])
def test_axis_aligned_rectangles_have_their_exact_volume(w, h):
    x = np.arange(-100.0, 100.1, 2.5) + 0.3
    z = np.arange(-50.0, 50.1, 2.5) + 0.7
    dose = DoseVolume(values=np.full((z.size, x.size, x.size), 10.0), x=x, y=x.copy(), z=z)
    rect = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]) \
        + [1.13, 0.37]
    planes = [ContourPlane(z=zz, polygons=[rect]) for zz in np.arange(-10.0, 10.1, 2.5)]
    roi = StructureROI(1, "Box", planes=planes)
    assign_slabs([roi], 2.5, np.arange(-30.0, 30.1, 2.5))
    r = compute_roi_dvh(roi, dose, DVHConfig())
    assert r.volume_cc == pytest.approx(w * h * len(planes) * 2.5 / 1000.0, rel=1e-9)
    assert r.dvh.total_cc == pytest.approx(r.volume_cc, rel=1e-9)
