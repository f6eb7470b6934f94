"""A crowded phantom course, like the output of an auto-segmentation model: 100+ ROIs of every
size (spheres under 1 cc to 100 cc, cylinders, hollow shells) in an oblique linear dose field.
Used to time DVH engines on realistic ROI counts while every ROI still has an analytic truth."""

from __future__ import annotations

import numpy as np

from rtnode.phantom.course import PhantomCourse, linear_dose
from rtnode.phantom.ct import CTGeometry
from rtnode.phantom.rt import DoseGrid, make_rtstruct
from rtnode.phantom.shapes import Cylinder, EllipticBody, Shape, Shell, Sphere

#: oblique gradient (Gy/mm) used by default: every axis of the dose grid matters
DEFAULT_GRADIENT = (0.15, -0.10, 0.12)


def many_shapes(n_rois: int = 120, seed: int = 0, body: EllipticBody | None = None,
                z_half: float = 55.0, radii: tuple[float, float] = (4.0, 30.0)) -> list[Shape]:
    """n_rois random spheres (60 %), cylinders (25 %) and shells (15 %) inside the body, radii
    log-uniform in ``radii`` (4–30 mm: about a fifth below 1 cc), followed by the body."""
    body = body or EllipticBody(semi_x=120.0, semi_y=90.0)
    rng = np.random.default_rng(seed)
    shapes: list[Shape] = []
    for i in range(n_rois):
        kind = rng.choice(["sphere", "cylinder", "shell"], p=[0.6, 0.25, 0.15])
        r = float(np.exp(rng.uniform(np.log(radii[0]), np.log(radii[1]))))
        while True:  # the whole cross-section inside the body outline
            x = rng.uniform(-body.semi_x, body.semi_x)
            y = rng.uniform(-body.semi_y, body.semi_y)
            if ((abs(x) + r) / body.semi_x) ** 2 + ((abs(y) + r) / body.semi_y) ** 2 <= 1.0:
                break
        name = f"auto{i + 1:03d}_{kind}"  # ROIObservationLabel (SH) holds 16 characters
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        if kind == "sphere":
            z = rng.uniform(-z_half + r, z_half - r)
            shapes.append(Sphere(name, color=color, center=(x, y, z), radius=r))
        elif kind == "shell":
            r = max(r, 8.0)
            z = rng.uniform(-z_half + r, z_half - r)
            shapes.append(Shell(name, color=color, center=(x, y, z), outer=r,
                                inner=r * float(rng.uniform(0.4, 0.7))))
        else:
            length = float(rng.uniform(10.0, 60.0))
            z0 = rng.uniform(-z_half, z_half - length)
            # end faces half-way between 2.5 mm slices, where the contour stack ends
            z0 = np.floor(z0 / 2.5) * 2.5
            z1 = z0 + np.ceil(length / 2.5) * 2.5
            shapes.append(Cylinder(name, color=color, center=(x, y), radius=r, z0=float(z0),
                                   z1=float(z1)))
    shapes.append(body)
    return shapes


def many_roi_course(n_rois: int = 120, seed: int = 0,
                    gradient: tuple[float, float, float] = DEFAULT_GRADIENT,
                    d0: float = 60.0, geometry: CTGeometry | None = None,
                    shapes: list[Shape] | None = None,
                    dose_grid: DoseGrid | None = None) -> PhantomCourse:
    """A built course whose RTSTRUCT marks every ROI AUTOMATIC, as an auto-segmentation's does.
    ``geometry``, ``shapes`` and ``dose_grid`` replace the default CT, ROIs and dose grid."""
    course = PhantomCourse(shapes=shapes or many_shapes(n_rois, seed),
                           geometry=geometry or CTGeometry(), dose_grid=dose_grid,
                           dose=linear_dose(d0, gradient)).build()
    course.rtstruct = make_rtstruct(course.patient, course.ct, course.shapes,
                                    label="AUTOSEG", algorithm="AUTOMATIC")
    return course
