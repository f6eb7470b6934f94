"""Analytic shapes sampled on a CT grid: the truth an auto-segmentation or an RTSTRUCT
round trip is compared with. A voxel belongs to a shape when its centre does."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset

from rtnode.phantom.shapes import Shape
from rtnode.rtstruct.geometry import CTGrid


def voxel_centres(ct: Sequence[Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient x, y, z of every voxel centre, each shaped like the CT grid (slices sorted
    along the slice normal, as rtnode's masks are)."""
    grid = CTGrid.from_datasets(ct)
    k, r, c = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    p = grid.index_to_patient(k, r, c)
    return p[..., 0], p[..., 1], p[..., 2]


def shape_masks(ct: Sequence[Dataset], shapes: Sequence[Shape]) -> dict[str, np.ndarray]:
    """Shape name → bool mask on the CT grid; shapes sharing a name are united (several
    islands of one ROI)."""
    x, y, z = voxel_centres(ct)
    out: dict[str, np.ndarray] = {}
    for s in shapes:
        m = np.asarray(s.contains(x, y, z), dtype=bool)
        out[s.name] = out[s.name] | m if s.name in out else m
    return out
