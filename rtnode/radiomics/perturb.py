"""Segmentation perturbations for robustness analysis: grow or shrink a mask to a target volume
change, shift it, add image noise — each deterministic for a given seed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def resize_to_volume(mask: np.ndarray, change_pct: float,
                     spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Erode (change < 0) or dilate (change > 0) to the target voxel count exactly.

    Voxels are removed (or added) in order of their Euclidean distance (mm) to the ROI's
    surface — an erosion/dilation by a distance threshold — and, within one distance shell,
    by distance to the ROI centroid, so that a partial shell is taken evenly around the ROI
    rather than one whole voxel layer (≈ 20 % of a 1 cc sphere) at a time.
    """
    n = int(mask.sum())
    if change_pct == 0 or n == 0:
        return mask.copy()
    target = int(round(n * (1.0 + change_pct / 100.0)))
    centre = np.array([float(v.mean()) for v in np.nonzero(mask)])
    grow = change_pct > 0
    dist = ndimage.distance_transform_edt(~mask if grow else mask, sampling=spacing_zyx)
    pool = (~mask & (dist <= 60.0)) if grow else mask
    idx = np.nonzero(pool)
    tie = np.sqrt(sum(((i - c) * s) ** 2 for i, c, s in zip(idx, centre, spacing_zyx)))
    # growing: nearest the surface first; shrinking: keep the deepest voxels first
    order = np.lexsort((tie, dist[idx])) if grow else np.lexsort((-tie, -dist[idx]))
    out = mask.copy() if grow else np.zeros_like(mask)
    take = order[: max(target - n, 0)] if grow else order[: max(target, 0)]
    out[tuple(i[take] for i in idx)] = True
    return out


def shift(mask: np.ndarray, shift_mm: tuple[float, float, float],
          spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Translate by whole voxels nearest to shift_mm (x, y, z); voxels leaving the grid drop."""
    steps = [int(round(s / sp)) for s, sp in zip(shift_mm, spacing_xyz)]
    return ndimage.shift(mask.astype(np.uint8), (steps[2], steps[1], steps[0]), order=0,
                         mode="constant", cval=0).astype(bool)
