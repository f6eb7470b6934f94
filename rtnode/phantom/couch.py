"""A treatment couch under the phantom: two dense carbon-fibre plates around a foam core, below
the body with an air gap, as it appears on every planning CT. An auto-contoured BODY must leave
it out, so the phantom can show that it does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Couch:
    """A slab spanning all of z: ``top`` is the patient y (mm) of its upper surface (the body
    lies at smaller y on a HFS CT, where +y points posterior); plates of ``plate`` mm at
    ``plate_hu`` sandwich a foam core of ``core_hu``."""

    top: float = 100.0
    thickness: float = 30.0
    half_width: float = 200.0
    plate: float = 4.0
    plate_hu: float = 400.0
    core_hu: float = -850.0

    def contains(self, x, y, z):
        return (np.abs(x) <= self.half_width) & (y >= self.top) & (y <= self.top + self.thickness)

    def hu_at(self, x, y, z) -> np.ndarray:
        """CT number inside the couch (only meaningful where ``contains``)."""
        in_plate = (y <= self.top + self.plate) | (y >= self.top + self.thickness - self.plate)
        return np.where(in_plate, self.plate_hu, self.core_hu)


def with_couch(hu: Callable, couch: Couch) -> Callable:
    """A HU function (as given to make_ct_series) with the couch drawn in where it is air."""

    def hu_couch(x, y, z):
        out = hu(x, y, z)
        inside = couch.contains(x, y, z)
        out[inside] = couch.hu_at(x, y, z)[inside]
        return out

    return hu_couch
