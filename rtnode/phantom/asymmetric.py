"""A phantom that tells every direction apart: one insert only anterior-left-superior, one only
posterior-inferior, each with its own HU, and a dose hot spot on the anterior-left one.

Scanned head-first supine (HFS), feet-first supine (FFS) or head-first prone (HFP) with the
ImageOrientationPatient a scanner writes for that position, so a picture that mirrors or swaps
any axis — image, contour or dose — puts something visibly in the wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from rtnode.phantom.ct import CTGeometry, Patient, make_ct_series, water_phantom_hu
from rtnode.phantom.rt import DoseGrid, make_rtdose, make_rtplan, make_rtstruct
from rtnode.phantom.shapes import EllipticBody, Sphere

#: ImageOrientationPatient as scanners write it for each patient position
ORIENTATIONS: dict[str, tuple[float, ...]] = {
    "HFS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "FFS": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "HFP": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
}

#: patient x > 0 is the patient's left, y < 0 anterior, z > 0 superior (DICOM LPS)
ANTERIOR_LEFT = Sphere("AntLeft", color=(0, 200, 255), center=(42.0, -28.0, 10.0), radius=12.0)
POSTERIOR = Sphere("Posterior", color=(255, 200, 0), center=(0.0, 36.0, -10.0), radius=12.0)
BODY = EllipticBody(semi_x=80.0, semi_y=62.0)
#: CT numbers of the inserts, distinct from water (0) and from each other
INSERT_HU = {"AntLeft": 400.0, "Posterior": 900.0}


def hot_spot(center=ANTERIOR_LEFT.center, peak: float = 60.0, sigma: float = 15.0):
    """Dose (Gy): a Gaussian around the anterior-left insert."""
    cx, cy, cz = center

    def dose(x, y, z):
        r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
        return peak * np.exp(-r2 / (2 * sigma**2))

    return dose


@dataclass
class AsymmetricCourse:
    position: str = "HFS"
    patient: Patient = field(default_factory=lambda: Patient(patient_id="ASYM"))
    ct: list[Dataset] = field(default_factory=list)
    rtstruct: Dataset | None = None
    rtplan: Dataset | None = None
    rtdose: Dataset | None = None

    @property
    def datasets(self) -> list[Dataset]:
        return [*self.ct, *(d for d in (self.rtstruct, self.rtplan, self.rtdose) if d)]


def asymmetric_course(position: str = "HFS") -> AsymmetricCourse:
    """CT (64 x 64 x 30, 3 mm pixels, 2.5 mm slices), RTSTRUCT (AntLeft, Posterior, BODY),
    RTPLAN and an axial RTDOSE with the hot spot on AntLeft."""
    if position not in ORIENTATIONS:
        raise ValueError(f"position must be one of {', '.join(ORIENTATIONS)}")
    out = AsymmetricCourse(position)
    out.patient.patient_id = f"ASYM_{position}"
    geometry = CTGeometry(rows=64, columns=64, pixel_spacing=(3.0, 3.0), slices=30,
                          slice_spacing=2.5, orientation=ORIENTATIONS[position],
                          patient_position=position)
    inserts = [(ANTERIOR_LEFT, INSERT_HU["AntLeft"]), (POSTERIOR, INSERT_HU["Posterior"])]
    out.ct = make_ct_series(out.patient, geometry, water_phantom_hu(BODY, inserts))
    shapes = [ANTERIOR_LEFT, POSTERIOR, BODY]
    out.rtstruct = make_rtstruct(out.patient, out.ct, shapes)
    out.rtplan = make_rtplan(out.patient, out.rtstruct, 60.0, target_roi_number=1)
    grid = DoseGrid(origin=(-90.0, -90.0, -35.0), spacing=(3.0, 3.0, 2.5), shape=(29, 61, 61))
    out.rtdose = make_rtdose(out.patient, out.rtplan, grid, hot_spot())
    return out
