"""A whole phantom treatment course — CT, RTSTRUCT, RTPLAN, RTDOSE — with its analytic truth.

Used by the tests, the benchmarks and ``rtnode demo``: everything a stage computes from these files
can be compared with the shapes and dose function that made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pydicom.dataset import Dataset

from rtnode.phantom.ct import CTGeometry, Patient, make_ct_series, water_phantom_hu
from rtnode.phantom.rt import DoseGrid, make_rtdose, make_rtplan, make_rtstruct
from rtnode.phantom.shapes import Cylinder, EllipticBody, Shape, Shell, Sphere


def linear_dose(d0: float = 60.0, gradient: tuple[float, float, float] = (0.0, 0.0, 0.0),
                center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Callable:
    """Dose in Gy = d0 + g·(p − c): a field whose DVH for any analytic shape is known exactly."""
    gx, gy, gz = gradient
    cx, cy, cz = center

    def dose(x, y, z):
        return np.maximum(d0 + gx * (x - cx) + gy * (y - cy) + gz * (z - cz), 0.0)

    return dose


def default_shapes() -> list[Shape]:
    return [
        Sphere("PTV", color=(255, 0, 0), interpreted_type="PTV", center=(0.0, 0.0, 0.0),
               radius=25.0),
        Sphere("GTV", color=(255, 128, 0), interpreted_type="GTV", center=(0.0, 0.0, 0.0),
               radius=12.0),
        Cylinder("SpinalCord", color=(255, 255, 0), center=(0.0, 60.0), radius=6.0,
                 z0=-40.0, z1=40.0),
        Shell("Shell", color=(0, 128, 255), center=(60.0, 0.0, 0.0), outer=18.0, inner=9.0),
        EllipticBody(semi_x=120.0, semi_y=90.0),
    ]


@dataclass
class PhantomCourse:
    """A course and the truth behind it; ``build()`` makes the datasets, ``write()`` files them."""

    patient: Patient = field(default_factory=Patient)
    geometry: CTGeometry = field(default_factory=CTGeometry)
    shapes: Sequence[Shape] = field(default_factory=default_shapes)
    dose: Callable = field(default_factory=linear_dose)
    dose_grid: DoseGrid | None = None
    prescription_gy: float = 60.0
    ct: list[Dataset] = field(default_factory=list)
    rtstruct: Dataset | None = None
    rtplan: Dataset | None = None
    rtdose: Dataset | None = None

    def default_dose_grid(self) -> DoseGrid:
        """A 2.5 mm grid covering the CT, shifted by a fraction of a voxel as TPS grids often are."""
        g = self.geometry
        first = g.first_position()
        last = g.slice_position(g.slices - 1)
        x0, y0 = first[0], first[1]
        x1 = x0 + (g.columns - 1) * g.pixel_spacing[1]
        y1 = y0 + (g.rows - 1) * g.pixel_spacing[0]
        z0, z1 = sorted((first[2], last[2]))
        sp = 2.5
        shape = (int((z1 - z0) // sp) + 1, int((y1 - y0) // sp) + 1, int((x1 - x0) // sp) + 1)
        return DoseGrid(origin=(x0 + 0.3 * sp, y0 + 0.3 * sp, z0 + 0.3 * sp),
                        spacing=(sp, sp, sp), shape=shape)

    def build(self, with_rt: bool = True) -> "PhantomCourse":
        body = next((s for s in self.shapes if isinstance(s, EllipticBody)), EllipticBody())
        inserts = [(s, 40.0) for s in self.shapes if not isinstance(s, EllipticBody)]
        self.ct = make_ct_series(self.patient, self.geometry, water_phantom_hu(body, inserts))
        if with_rt:
            self.rtstruct = make_rtstruct(self.patient, self.ct, self.shapes)
            self.rtplan = make_rtplan(self.patient, self.rtstruct, self.prescription_gy)
            self.rtdose = make_rtdose(self.patient, self.rtplan,
                                      self.dose_grid or self.default_dose_grid(), self.dose)
        return self

    @property
    def datasets(self) -> list[Dataset]:
        rt = [d for d in (self.rtstruct, self.rtplan, self.rtdose) if d is not None]
        return [*self.ct, *rt]

    def write(self, folder: Path | str) -> list[Path]:
        """Write every object as <Modality>_<n>.dcm under folder; returns the paths in order."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for n, ds in enumerate(self.datasets):
            path = folder / f"{ds.Modality}_{n:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths
