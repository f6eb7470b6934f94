"""Overlap and surface distance between two masks on one grid (auto vs manual contours)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(a: np.ndarray, b: np.ndarray,
                      spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Distances (mm) from every surface voxel of a to b's surface and back (symmetric)."""
    sa, sb = _surface(a), _surface(b)
    if not sa.any() or not sb.any():
        return np.asarray([np.inf])
    da = ndimage.distance_transform_edt(~sb, sampling=spacing_zyx)
    db = ndimage.distance_transform_edt(~sa, sampling=spacing_zyx)
    return np.concatenate([da[sa], db[sb]])


def hd95(a: np.ndarray, b: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """95th percentile of the symmetric surface distance (mm)."""
    return float(np.percentile(surface_distances(a, b, spacing_zyx), 95))


def mean_surface_distance(a: np.ndarray, b: np.ndarray,
                          spacing_zyx: tuple[float, float, float]) -> float:
    return float(np.mean(surface_distances(a, b, spacing_zyx)))
