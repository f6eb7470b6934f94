"""Phantom courses with analytic DVH truth, shared by the DVH tests (built once per process)."""

from __future__ import annotations

from functools import lru_cache

from rtnode.dvh import DVHConfig, compute_dvhs
from rtnode.phantom import CTGeometry, PhantomCourse, linear_dose
from rtnode.phantom.dvh_truth import LinearField, TruthDVH, analytic_dvh, stack_dvh
from rtnode.phantom.rt import DoseGrid
from rtnode.phantom.shapes import Cylinder, Shape, Shell, Sphere

#: Gy/mm: 6 Gy across the 80 mm sphere, a realistic penumbra-free gradient
GRADIENT = 0.15
D0 = 60.0
DOSE_KEYS = ("d98_gy", "d95_gy", "d50_gy", "d2_gy", "dmean_gy")
AXES = {"x": (GRADIENT, 0.0, 0.0), "y": (0.0, GRADIENT, 0.0), "z": (0.0, 0.0, GRADIENT)}

#: spheres of radius 5-40 mm (0.5-268 cc), cylinders, a hollow shell; none leaves the dose grid
SHAPES: tuple[Shape, ...] = (
    Sphere("Sphere_r5", interpreted_type="ORGAN", center=(-60.0, -40.0, 10.0), radius=5.0),
    Sphere("Sphere_r8", interpreted_type="ORGAN", center=(60.0, -40.0, -10.0), radius=8.0),
    Sphere("Sphere_r15", interpreted_type="ORGAN", center=(-60.0, 40.0, 0.0), radius=15.0),
    Sphere("Sphere_r25", interpreted_type="PTV", center=(60.0, 40.0, 5.0), radius=25.0),
    Sphere("Sphere_r40", interpreted_type="ORGAN", center=(0.0, 0.0, 0.0), radius=40.0),
    Cylinder("Cyl_r10", center=(0.0, -70.0), radius=10.0, z0=-30.0, z1=30.0),
    Cylinder("Cyl_r4", center=(-95.0, 0.0), radius=4.0, z0=-10.0, z1=10.0),
    Shell("Shell_20_10", center=(0.0, 70.0, 0.0), outer=20.0, inner=10.0),
)


def slice_positions(geometry: CTGeometry | None = None) -> list[float]:
    g = geometry or CTGeometry()
    return [float(g.slice_position(k)[2]) for k in range(g.slices)]


def offset_grid(spacing: float = 3.0, frac: tuple[float, float, float] = (0.37, 0.61, 0.23),
                geometry: CTGeometry | None = None) -> DoseGrid:
    """A dose grid of another pitch, shifted from the CT grid by fractions of a voxel."""
    g = geometry or CTGeometry()
    first = g.first_position()
    nx = int(((g.columns - 1) * g.pixel_spacing[1]) // spacing)
    ny = int(((g.rows - 1) * g.pixel_spacing[0]) // spacing)
    nz = int(((g.slices - 1) * g.slice_spacing) // spacing)
    return DoseGrid(origin=(first[0] + frac[0] * spacing, first[1] + frac[1] * spacing,
                            first[2] + frac[2] * spacing),
                    spacing=(spacing, spacing, spacing), shape=(nz, ny, nx))


@lru_cache(maxsize=None)
def course(gradient: tuple[float, float, float], grid_key: str = "default",
           shapes: tuple[Shape, ...] = SHAPES) -> PhantomCourse:
    """A built course (CT, RTSTRUCT, RTPLAN, RTDOSE) in the linear field D0 + gradient·p."""
    grid = offset_grid() if grid_key == "offset3mm" else None
    return PhantomCourse(shapes=shapes, dose=linear_dose(D0, gradient), dose_grid=grid).build()


@lru_cache(maxsize=None)
def results(gradient: tuple[float, float, float], engine: str = "rtnode",
            grid_key: str = "default", shapes: tuple[Shape, ...] = SHAPES):
    c = course(gradient, grid_key, shapes)
    return compute_dvhs(c.rtstruct, c.rtdose, c.rtplan, DVHConfig(engine=engine))


def metrics_by_name(res, dose_source: str | None = None) -> dict[str, dict]:
    """ROI name -> metric row in the course dose (or in the named dose source)."""
    rows = [r for r in res.metrics if (r.get("dose_source") == dose_source if dose_source
                                       else r.get("course_dose", True))]
    return {row["roi_name"]: row for row in rows}


def truths(shape: Shape, gradient: tuple[float, float, float]) -> tuple[TruthDVH, TruthDVH]:
    """(analytic solid, contour stack) truth of one shape."""
    field = LinearField(D0, gradient)
    return analytic_dvh(shape, field), stack_dvh(shape, slice_positions(), field)
