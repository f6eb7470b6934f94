"""A course for QC with known defects, each switchable: a missing CT slice, an empty ROI, an
auto-segmentation with left and right kidneys swapped, and a dose grid that misses a ROI.

Without defects the same course is clean, so a QC test can show that each defect produces
exactly its own finding and nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from rtnode.phantom.course import PhantomCourse
from rtnode.phantom.ct import CTGeometry, Patient
from rtnode.phantom.rt import DoseGrid, make_rtdose, make_rtstruct
from rtnode.phantom.shapes import EllipticBody, Shape, Sphere

GEOMETRY = CTGeometry(rows=128, columns=128, pixel_spacing=(2.0, 2.0), slices=48,
                      slice_spacing=2.5)
#: index of the CT slice the 'missing slice' defect removes
MISSING_SLICE = 30


@dataclass(frozen=True)
class Defects:
    missing_slice: bool = True
    empty_roi: bool = True
    laterality_swap: bool = True
    dose_misses_roi: bool = True


def manual_shapes(empty_roi: bool) -> list[Shape]:
    shapes: list[Shape] = [
        Sphere("GTV", color=(255, 128, 0), interpreted_type="GTV", radius=10.0),
        Sphere("PTV", color=(255, 0, 0), interpreted_type="PTV", radius=16.0),
        Sphere("Spleen", color=(128, 0, 255), center=(55.0, -20.0, 15.0), radius=24.0),
        Sphere("Rectum", color=(160, 80, 0), center=(0.0, 50.0, -38.0), radius=10.0),
    ]
    if empty_roi:  # a sphere far beyond the scan: an ROI that was named but never drawn
        shapes.append(Sphere("Empty_ROI", center=(0.0, 0.0, 900.0), radius=5.0))
    return [*shapes, EllipticBody(semi_x=120.0, semi_y=90.0)]


def auto_shapes(swap: bool) -> list[Shape]:
    """Patient left is +x in DICOM patient coordinates: Kidney_L belongs at x > 0."""
    left_x = -50.0 if swap else 50.0
    return [Sphere("Kidney_L", color=(0, 200, 0), center=(left_x, 40.0, 10.0), radius=25.0),
            Sphere("Kidney_R", color=(0, 120, 0), center=(-left_x, 40.0, 10.0), radius=25.0),
            Sphere("spleen", color=(128, 0, 255), center=(55.0, -20.0, 15.0), radius=24.0)]


def qc_course(defects: Defects = Defects(), patient_id: str = "QCDEFECT") -> list[Dataset]:
    """All datasets of the course: CT, manual RTSTRUCT, auto RTSTRUCT, RTPLAN, RTDOSE."""
    course = PhantomCourse(patient=Patient(patient_id=patient_id), geometry=GEOMETRY,
                           shapes=manual_shapes(defects.empty_roi)).build()
    auto = make_rtstruct(course.patient, course.ct, auto_shapes(defects.laterality_swap),
                         label="AUTOSEG", series_number=5, algorithm="AUTOMATIC")
    if defects.dose_misses_roi:  # the grid starts at z = -22.5 mm; Rectum spans -48..-28 mm
        full = course.default_dose_grid()
        z0 = -22.5
        frames = int((full.origin[2] + (full.shape[0] - 1) * full.spacing[2] - z0)
                     // full.spacing[2]) + 1
        grid = DoseGrid(origin=(full.origin[0], full.origin[1], z0), spacing=full.spacing,
                        shape=(frames, full.shape[1], full.shape[2]))
        course.rtdose = make_rtdose(course.patient, course.rtplan, grid, course.dose)
    ct = list(course.ct)
    if defects.missing_slice:
        del ct[MISSING_SLICE]
    return [*ct, course.rtstruct, auto, course.rtplan, course.rtdose]


def write_qc_course(folder: Path | str, defects: Defects = Defects(),
                    patient_id: str = "QCDEFECT") -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(qc_course(defects, patient_id)):
        path = folder / f"{ds.Modality}_{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
