"""Exact DVHs of phantom shapes in a linear dose field, the ground truth for DVH engines.

For dose D(p) = d0 + g·(p − c) the volume of a shape receiving at least d is the volume on one
side of a plane: closed form for spheres and shells (spherical caps), a one-dimensional integral
of circular-segment areas for cylinders. The same formulas applied slab by slab give the truth
for the *contour stack* an RTSTRUCT actually carries (each plane's polygon extruded over its
slab), which separates an engine's error from the stair-step of the contours themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import brentq

from rtnode.phantom.shapes import Cylinder, Shape, Shell, Sphere

#: z sub-steps per mm when a cylinder's segment areas are integrated along its axis
Z_STEPS_PER_MM = 200


@dataclass(frozen=True)
class LinearField:
    """D(p) = d0 + gradient·(p − center) in Gy (gradient in Gy/mm); the same field as
    ``rtnode.phantom.course.linear_dose`` with the same arguments, valid where D > 0."""

    d0: float = 60.0
    gradient: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def magnitude(self) -> float:
        return float(np.linalg.norm(self.gradient))

    @property
    def direction(self) -> np.ndarray:
        g = np.asarray(self.gradient, dtype=float)
        return g / self.magnitude if self.magnitude > 0 else np.array([0.0, 0.0, 1.0])

    def dose_at(self, p: Sequence[float]) -> float:
        return self.d0 + float(np.dot(self.gradient, np.subtract(p, self.center)))

    def level(self, dose: np.ndarray) -> np.ndarray:
        """Signed distance s along the gradient direction at which the field equals dose."""
        return (np.asarray(dose, dtype=float) - self.d0) / self.magnitude + float(
            np.dot(self.direction, self.center))


def cap_volume(radius: float, height: np.ndarray) -> np.ndarray:
    """Volume of a spherical cap of the given height (0 .. 2 radius)."""
    h = np.clip(height, 0.0, 2.0 * radius)
    return math.pi * h * h * (3.0 * radius - h) / 3.0


def sphere_above(center: Sequence[float], radius: float, u: np.ndarray,
                 s: np.ndarray) -> np.ndarray:
    """Volume of a sphere on the side u·p >= s of a plane."""
    return cap_volume(radius, radius - (np.asarray(s) - float(np.dot(u, center))))


def segment_area(radius: float, t: np.ndarray) -> np.ndarray:
    """Area of the part of a disk beyond a chord at signed distance t from its centre."""
    t = np.clip(t, -radius, radius)
    return radius * radius * np.arccos(t / radius) - t * np.sqrt(radius * radius - t * t)


def cylinder_above(cx: float, cy: float, radius: float, z0: float, z1: float, u: np.ndarray,
                   s: np.ndarray) -> np.ndarray:
    """Volume of an axial cylinder on the side u·p >= s (midpoint rule along the axis when the
    plane is oblique; exact when it is parallel or perpendicular to the axis)."""
    s = np.atleast_1d(np.asarray(s, dtype=float))
    a = math.hypot(u[0], u[1])
    if a < 1e-12:
        zs = s / u[2] if u[2] != 0 else np.full_like(s, -np.inf)
        length = np.clip(z1 - zs, 0.0, z1 - z0) if u[2] > 0 else np.clip(zs - z0, 0.0, z1 - z0)
        return math.pi * radius * radius * length
    n = max(8, int(math.ceil((z1 - z0) * Z_STEPS_PER_MM))) if abs(u[2]) > 1e-12 else 1
    z = z0 + (np.arange(n) + 0.5) * (z1 - z0) / n
    centre_level = u[0] * cx + u[1] * cy + u[2] * z  # (n,)
    t = (s[:, None] - centre_level[None, :]) / a
    return segment_area(radius, t).sum(axis=1) * (z1 - z0) / n


def shape_above(shape: Shape, u: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Volume (mm³) of an analytic shape on the side u·p >= s."""
    if isinstance(shape, Shell):
        return (sphere_above(shape.center, shape.outer, u, s)
                - sphere_above(shape.center, shape.inner, u, s))
    if isinstance(shape, Sphere):
        return sphere_above(shape.center, shape.radius, u, s)
    if isinstance(shape, Cylinder):
        return cylinder_above(shape.center[0], shape.center[1], shape.radius, shape.z0,
                              shape.z1, u, s)
    raise TypeError(f"no analytic DVH for {type(shape).__name__}")


def stack_above(shape: Shape, slabs: Sequence[tuple[float, float, float]], u: np.ndarray,
                s: np.ndarray) -> np.ndarray:
    """Volume (mm³) on the side u·p >= s of the contour stack: for every (z, z_lo, z_hi) slab
    each polygon of ``shape.contours_at(z)`` (equal-area circles) extruded over [z_lo, z_hi];
    the second circle on a plane is a hole (Shell)."""
    total = np.zeros(np.atleast_1d(s).shape)
    for z, z_lo, z_hi in slabs:
        for k, poly in enumerate(shape.contours_at(z)):
            c = poly.mean(axis=0)
            r = math.sqrt(_area(poly) / math.pi)
            part = cylinder_above(float(c[0]), float(c[1]), r, z_lo, z_hi, u, s)
            total += -part if k % 2 else part
    return total


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def slabs_for(shape: Shape, slice_positions: Sequence[float]) -> list[tuple[float, float, float]]:
    """(z, z_lo, z_hi) of every slice plane on which the shape has a contour, with slabs reaching
    half-way to the neighbouring slices (the generator's convention)."""
    zs = np.sort(np.asarray(slice_positions, dtype=float))
    gaps = np.diff(zs) / 2.0
    below = np.concatenate([[gaps[0]], gaps])
    above = np.concatenate([gaps, [gaps[-1]]])
    return [(float(z), float(z - b), float(z + a)) for z, b, a in zip(zs, below, above)
            if shape.contours_at(float(z))]


@dataclass
class TruthDVH:
    """A cumulative DVH known in closed form: volume_above(d) in mm³, plus total and mean."""

    volume_above: Callable[[np.ndarray], np.ndarray]
    volume_mm3: float
    dmean_gy: float
    dmin_gy: float
    dmax_gy: float

    def dose_at_fraction(self, fraction: float) -> float:
        """Minimum dose of the hottest fraction of the volume."""
        target = fraction * self.volume_mm3
        if self.dmax_gy - self.dmin_gy < 1e-12:
            return self.dmin_gy
        return brentq(lambda d: float(self.volume_above(np.array([d]))[0]) - target,
                      self.dmin_gy, self.dmax_gy, xtol=1e-7)

    def metrics(self, levels_pct: Sequence[float] = (98, 95, 50, 2)) -> dict[str, float]:
        out = {"volume_cc": self.volume_mm3 / 1000.0, "dmean_gy": self.dmean_gy,
               "dmin_gy": self.dmin_gy, "dmax_gy": self.dmax_gy}
        for pct in levels_pct:
            out[f"d{pct:g}_gy"] = self.dose_at_fraction(pct / 100.0)
        return out


def _extent(shape: Shape, u: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Range of u·p over the shape and its centroid."""
    if isinstance(shape, (Sphere, Shell)):
        r = shape.outer if isinstance(shape, Shell) else shape.radius
        c = np.asarray(shape.center, dtype=float)
        return float(u @ c) - r, float(u @ c) + r, c
    if isinstance(shape, Cylinder):
        c = np.array([shape.center[0], shape.center[1], 0.5 * (shape.z0 + shape.z1)])
        half = math.hypot(u[0], u[1]) * shape.radius + abs(u[2]) * 0.5 * (shape.z1 - shape.z0)
        return float(u @ c) - half, float(u @ c) + half, c
    raise TypeError(f"no analytic DVH for {type(shape).__name__}")


def _truth(above: Callable[[np.ndarray], np.ndarray], volume: float, centroid: np.ndarray,
           lo: float, hi: float, field: LinearField) -> TruthDVH:
    g = field.magnitude
    u = field.direction
    if g == 0:
        return TruthDVH(lambda d: np.where(np.asarray(d) <= field.d0, volume, 0.0), volume,
                        field.d0, field.d0, field.d0)
    shift = field.d0 - g * float(u @ np.asarray(field.center, dtype=float))
    return TruthDVH(lambda d: above(field.level(d)), volume,
                    dmean_gy=field.dose_at(centroid), dmin_gy=shift + g * lo,
                    dmax_gy=shift + g * hi)


def analytic_dvh(shape: Shape, field: LinearField) -> TruthDVH:
    """Exact DVH of the analytic solid."""
    u = field.direction
    lo, hi, centroid = _extent(shape, u)
    return _truth(lambda s: shape_above(shape, u, s), shape.volume_mm3, centroid, lo, hi, field)


def stack_dvh(shape: Shape, slice_positions: Sequence[float], field: LinearField) -> TruthDVH:
    """Exact DVH of the contour stack written for the shape on the given slice planes."""
    u = field.direction
    slabs = slabs_for(shape, slice_positions)
    volume = float(stack_above(shape, slabs, u, np.array([-1e9]))[0])
    lo, hi = 1e18, -1e18
    moment = np.zeros(3)
    for z, z_lo, z_hi in slabs:
        for k, poly in enumerate(shape.contours_at(z)):
            c = poly.mean(axis=0)
            r = math.sqrt(_area(poly) / math.pi)
            v = math.pi * r * r * (z_hi - z_lo) * (-1 if k % 2 else 1)
            moment += v * np.array([c[0], c[1], 0.5 * (z_lo + z_hi)])
            if k % 2 == 0:
                a = math.hypot(u[0], u[1]) * r
                for zz in (z_lo, z_hi):
                    level = u[0] * c[0] + u[1] * c[1] + u[2] * zz
                    lo, hi = min(lo, level - a), max(hi, level + a)
    return _truth(lambda s: stack_above(shape, slabs, u, s), volume, moment / volume, lo, hi,
                  field)
