"""Synthetic RT courses with analytic truth: spheres, cylinders and shells in a water phantom,
planned and dosed with a known dose function. Ships in the package so that ``rtnode demo`` and
the benchmarks can make data on a machine that has none."""

from rtnode.phantom.course import PhantomCourse, default_shapes, linear_dose
from rtnode.phantom.ct import CTGeometry, Patient, make_ct_series, water_phantom_hu
from rtnode.phantom.rt import DoseGrid, make_rtdose, make_rtplan, make_rtstruct
from rtnode.phantom.shapes import Cylinder, EllipticBody, Shape, Shell, Sphere

__all__ = [
    "CTGeometry", "Cylinder", "DoseGrid", "EllipticBody", "Patient", "PhantomCourse", "Shape",
    "Shell", "Sphere", "default_shapes", "linear_dose", "make_ct_series", "make_rtdose",
    "make_rtplan", "make_rtstruct", "water_phantom_hu",
]
