"""RTSTRUCT writer and reader: analytic shapes → masks → RTSTRUCT → masks, on head-first,
feet-first and oblique CTs, validated by dciodvfy."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from peers import require
from rtnode.phantom import CTGeometry, Cylinder, EllipticBody, Patient, PhantomCourse, Shell, Sphere
from rtnode.phantom.ct import make_ct_series, water_phantom_hu
from rtnode.phantom.masks import shape_masks
from rtnode.rtstruct import CTGrid, RTStructError, read_rtstruct_masks, save_rtstruct, write_rtstruct

SHAPES = [
    Sphere("Sphere", color=(255, 0, 0), center=(30.0, -20.0, 5.0), radius=16.0),
    Shell("Shell", color=(0, 128, 255), center=(-35.0, 15.0, 0.0), outer=20.0, inner=10.0),
    # two islands of one ROI on the same slices
    Cylinder("TwoIslands", color=(255, 255, 0), center=(-20.0, -45.0), radius=9.0,
             z0=-20.0, z1=20.0),
    Cylinder("TwoIslands", center=(25.0, 40.0), radius=9.0, z0=-20.0, z1=20.0),
]

ROTATED = (math.cos(0.35), math.sin(0.35), 0.0,
           -math.sin(0.35) * math.cos(0.25), math.cos(0.35) * math.cos(0.25), math.sin(0.25))
GEOMETRIES = {
    "HFS": CTGeometry(rows=72, columns=80, pixel_spacing=(1.6, 1.5), slices=36,
                      slice_spacing=1.5, patient_position="HFS"),
    # feet first, stack sent head to toe: x flipped in the image plane, slices run -z
    "FFS": CTGeometry(rows=72, columns=80, pixel_spacing=(1.6, 1.5), slices=36,
                      slice_spacing=-1.5, orientation=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                      patient_position="FFS"),
    "oblique": CTGeometry(rows=80, columns=80, pixel_spacing=(1.5, 1.5), slices=40,
                          slice_spacing=1.5, orientation=ROTATED, origin=(-55.0, -70.0, -30.0)),
}


def make_ct(geometry: CTGeometry) -> list[Dataset]:
    body = EllipticBody(semi_x=75.0, semi_y=70.0)
    return make_ct_series(Patient(patient_id="RTS01", patient_name="Contour^Test"), geometry,
                          water_phantom_hu(body, [(s, 60.0) for s in SHAPES]))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module", params=list(GEOMETRIES))
def written(request, tmp_path_factory):
    ct = make_ct(GEOMETRIES[request.param])
    truth = shape_masks(ct, SHAPES)
    rs = write_rtstruct(ct, truth, colors={"Sphere": (255, 0, 0)}, model="test:analytic",
                        min_island_voxels=5)
    path = save_rtstruct(rs, tmp_path_factory.mktemp(request.param) / "rtstruct.dcm")
    return request.param, ct, truth, path


def test_round_trip_dice_per_organ(written):
    name, ct, truth, path = written
    back = read_rtstruct_masks(path, ct)
    grid = CTGrid.from_datasets(ct)
    assert set(back) == set(truth)
    for roi, mask in truth.items():
        cc = mask.sum() * grid.voxel_volume_mm3 / 1000.0
        assert cc >= 5.0, (roi, cc)
        assert dice(back[roi], mask) >= 0.98, (name, roi, dice(back[roi], mask))


def test_contours_sit_where_the_shapes_are_in_patient_space(written):
    """No flips: every contour lies on its slice's plane and around the analytic shape."""
    name, ct, truth, path = written
    rs = pydicom.dcmread(path)
    by_uid = {d.SOPInstanceUID: d for d in ct}
    grid = CTGrid.from_datasets(ct)
    numbers = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    sphere = SHAPES[0]
    checked = 0
    for item in rs.ROIContourSequence:
        roi = numbers[item.ReferencedROINumber]
        for c in item.ContourSequence:
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            assert c.NumberOfContourPoints == len(pts)
            sl = by_uid[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
            ipp = np.asarray(sl.ImagePositionPatient, dtype=float)
            assert np.allclose((pts - ipp) @ grid.normal, 0.0, atol=1e-3), (name, roi)
            if roi == "Sphere":
                # distance to the sphere centre: within the sphere plus a pixel, and not deep
                # inside it (a flipped axis would put the polygon 60 mm away)
                d = np.linalg.norm(pts - np.asarray(sphere.center), axis=1)
                assert d.max() <= sphere.radius + 2.0, (name, d.max())
                checked += 1
    assert checked >= 10


def test_iod_attributes_and_references(written):
    name, ct, truth, path = written
    rs = pydicom.dcmread(path)
    grid = CTGrid.from_datasets(ct)
    assert rs.Modality == "RTSTRUCT"
    assert rs.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert rs.StudyInstanceUID == ct[0].StudyInstanceUID
    assert rs.PatientID == "RTS01" and str(rs.PatientName) == "Contour^Test"
    assert rs.SeriesInstanceUID != ct[0].SeriesInstanceUID
    assert rs.SOPInstanceUID == rs.file_meta.MediaStorageSOPInstanceUID
    ref = rs.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == \
        set(grid.sop_instance_uids)
    rois = {r.ROINumber: r for r in rs.StructureSetROISequence}
    assert [str(r.ROIName) for r in rois.values()] == list(truth)
    assert {r.ROIGenerationAlgorithm for r in rois.values()} == {"AUTOMATIC"}
    assert {r.ROIGenerationDescription for r in rois.values()} == {"test:analytic"}
    assert {c.ReferencedROINumber for c in rs.ROIContourSequence} == set(rois)
    assert {o.ReferencedROINumber for o in rs.RTROIObservationsSequence} == set(rois)
    colours = {rois[c.ReferencedROINumber].ROIName: list(c.ROIDisplayColor)
               for c in rs.ROIContourSequence}
    assert colours["Sphere"] == [255, 0, 0]
    for item in rs.ROIContourSequence:
        for c in item.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            assert len(c.ContourImageSequence) == 1
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in grid.sop_instance_uids


def test_holes_and_islands_are_separate_polygons(written):
    name, ct, truth, path = written
    rs = pydicom.dcmread(path)
    numbers = {r.ROINumber: str(r.ROIName) for r in rs.StructureSetROISequence}
    per_slice: dict[str, dict[str, int]] = {}
    for item in rs.ROIContourSequence:
        counts: dict[str, int] = {}
        for c in item.ContourSequence:
            uid = c.ContourImageSequence[0].ReferencedSOPInstanceUID
            counts[uid] = counts.get(uid, 0) + 1
        per_slice[numbers[item.ReferencedROINumber]] = counts
    assert max(per_slice["TwoIslands"].values()) == 2
    assert max(per_slice["Shell"].values()) == 2   # outer boundary and the hole
    assert max(per_slice["Sphere"].values()) == 1


def test_every_decimal_string_fits_16_characters(written):
    name, ct, truth, path = written
    rs = pydicom.dcmread(path)
    lengths = []

    def visit(ds, elem):
        if elem.VR == "DS":
            raw = elem.value if elem.VM > 1 else [elem.value]
            lengths.extend(len(str(getattr(v, "original_string", v))) for v in raw)

    rs.walk(visit)
    assert lengths and max(lengths) <= 16


def test_dciodvfy_reports_no_errors(written):
    name, ct, truth, path = written
    out = subprocess.run([require("dciodvfy"), str(path)], capture_output=True, text=True,
                         timeout=120)
    text = out.stdout + out.stderr
    assert "RTStructureSet" in text  # recognised as the IOD it claims
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert not errors, text


def test_small_islands_are_dropped(tmp_path):
    ct = make_ct(GEOMETRIES["HFS"])
    grid = CTGrid.from_datasets(ct)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[10:20, 20:40, 20:40] = True      # 4000 voxels
    mask[30, 5:7, 5:7] = True             # a 4-voxel speck
    rs = write_rtstruct(ct, {"Organ": mask}, min_island_voxels=10)
    back = read_rtstruct_masks(rs, ct)["Organ"]
    assert back[10:20, 20:40, 20:40].all() and back.sum() == 4000
    rs = write_rtstruct(ct, {"Organ": mask}, min_island_voxels=1)
    assert read_rtstruct_masks(rs, ct)["Organ"].sum() == 4004


def test_empty_mask_keeps_its_roi_without_contours():
    ct = make_ct(GEOMETRIES["HFS"])
    grid = CTGrid.from_datasets(ct)
    rs = write_rtstruct(ct, {"Nothing": np.zeros(grid.shape, bool)})
    assert "ContourSequence" not in rs.ROIContourSequence[0]
    assert not read_rtstruct_masks(rs, ct)["Nothing"].any()


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_reader_lays_a_tps_structure_set_on_the_ct(position):
    """The phantom's own RTSTRUCT (analytic polygons in patient x/y, not our writer's) read back
    onto its CT; the off-centre shell and cord land on their side on a feet-first CT too."""
    ffs = position == "FFS"
    geometry = CTGeometry(rows=96, columns=96, pixel_spacing=(2.5, 2.5), slices=40,
                          slice_spacing=-2.5 if ffs else 2.5, patient_position=position,
                          orientation=(-1.0, 0, 0, 0, 1.0, 0) if ffs else (1.0, 0, 0, 0, 1.0, 0))
    course = PhantomCourse(geometry=geometry).build(with_rt=False)
    from rtnode.phantom.rt import make_rtstruct
    shapes = [s for s in course.shapes if not isinstance(s, EllipticBody)]
    rs = make_rtstruct(course.patient, course.ct, shapes)
    back = read_rtstruct_masks(rs, course.ct)
    truth = shape_masks(course.ct, shapes)
    grid = CTGrid.from_datasets(course.ct)
    for roi, mask in truth.items():
        if mask.sum() * grid.voxel_volume_mm3 >= 5000:
            assert dice(back[roi], mask) >= 0.95, (roi, dice(back[roi], mask))


def test_reader_refuses_another_frame_of_reference():
    ct = make_ct(GEOMETRIES["HFS"])
    other = make_ct(GEOMETRIES["HFS"])  # a new Patient(): another FrameOfReferenceUID
    rs = write_rtstruct(ct, shape_masks(ct, SHAPES[:1]))
    with pytest.raises(RTStructError, match="FrameOfReferenceUID"):
        read_rtstruct_masks(rs, other)


def test_bad_mask_shape_is_a_clear_error():
    ct = make_ct(GEOMETRIES["HFS"])
    with pytest.raises(ValueError, match="CT grid"):
        write_rtstruct(ct, {"X": np.zeros((3, 4, 5), bool)})
