"""Analytic solids that a phantom course is made of.

Each shape knows three things about itself: its exact volume, whether a point in patient
coordinates lies inside it, and the closed planar contours it cuts in an axial plane. Tests use the
first two as ground truth and the RTSTRUCT carries the third, so every number a stage computes from
the RTSTRUCT can be checked against geometry rather than against another program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: points per full circle when a round cross-section is written as a polygon
CIRCLE_POINTS = 96


def circle(cx: float, cy: float, r: float, n: int = CIRCLE_POINTS) -> np.ndarray:
    """A closed polygon (counter-clockwise, last point not repeated) approximating a circle.

    The vertices sit on a circle of radius r / cos(pi/n) so that the polygon and the circle have
    the same area; a polygon inscribed in the circle would lose ~0.07 % area at n = 96, which is
    below any tolerance here but would bias every volume test in the same direction.
    """
    ang = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    rr = r * math.sqrt((2 * math.pi / n) / math.sin(2 * math.pi / n))
    return np.column_stack([cx + rr * np.cos(ang), cy + rr * np.sin(ang)])


@dataclass(frozen=True)
class Shape:
    """Base for analytic solids; name is the ROI name the RTSTRUCT will carry."""

    name: str
    color: tuple[int, int, int] = (255, 0, 0)
    interpreted_type: str = "ORGAN"

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def contours_at(self, z: float) -> list[np.ndarray]:
        """Closed (N, 2) polygons in x, y cut at patient z; holes are separate polygons."""
        raise NotImplementedError

    @property
    def volume_mm3(self) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Sphere(Shape):
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 10.0

    def contains(self, x, y, z):
        cx, cy, cz = self.center
        return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= self.radius**2

    def contours_at(self, z):
        dz = z - self.center[2]
        if abs(dz) >= self.radius:
            return []
        r = math.sqrt(self.radius**2 - dz**2)
        return [circle(self.center[0], self.center[1], r)]

    @property
    def volume_mm3(self):
        return 4.0 / 3.0 * math.pi * self.radius**3


@dataclass(frozen=True)
class Cylinder(Shape):
    """Axis along patient z, from z0 to z1 (inclusive planes)."""

    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 10.0
    z0: float = -20.0
    z1: float = 20.0

    def contains(self, x, y, z):
        cx, cy = self.center
        return ((x - cx) ** 2 + (y - cy) ** 2 <= self.radius**2) & (z >= self.z0) & (z <= self.z1)

    def contours_at(self, z):
        if z < self.z0 or z > self.z1:
            return []
        return [circle(self.center[0], self.center[1], self.radius)]

    @property
    def volume_mm3(self):
        return math.pi * self.radius**2 * (self.z1 - self.z0)


@dataclass(frozen=True)
class Shell(Shape):
    """A hollow sphere: the inner sphere is written as a second contour (a hole, even-odd rule)."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    outer: float = 20.0
    inner: float = 10.0

    def contains(self, x, y, z):
        cx, cy, cz = self.center
        d2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
        return (d2 <= self.outer**2) & (d2 > self.inner**2)

    def contours_at(self, z):
        dz = z - self.center[2]
        out: list[np.ndarray] = []
        if abs(dz) < self.outer:
            out.append(circle(self.center[0], self.center[1], math.sqrt(self.outer**2 - dz**2)))
        if abs(dz) < self.inner:
            out.append(circle(self.center[0], self.center[1], math.sqrt(self.inner**2 - dz**2)))
        return out

    @property
    def volume_mm3(self):
        return 4.0 / 3.0 * math.pi * (self.outer**3 - self.inner**3)


@dataclass(frozen=True)
class EllipticBody(Shape):
    """The patient outline: an elliptic cylinder of water along z; its CT number is hu."""

    center: tuple[float, float] = (0.0, 0.0)
    semi_x: float = 150.0
    semi_y: float = 100.0
    hu: float = 0.0
    name: str = "BODY"
    interpreted_type: str = "EXTERNAL"
    color: tuple[int, int, int] = field(default=(0, 255, 0))

    def contains(self, x, y, z):
        cx, cy = self.center
        return ((x - cx) / self.semi_x) ** 2 + ((y - cy) / self.semi_y) ** 2 <= 1.0

    def contours_at(self, z):
        pts = circle(0.0, 0.0, 1.0)
        return [np.column_stack([self.center[0] + pts[:, 0] * self.semi_x,
                                 self.center[1] + pts[:, 1] * self.semi_y])]

    @property
    def volume_mm3(self):
        return math.inf
