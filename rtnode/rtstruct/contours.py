"""Binary mask slices ↔ closed planar polygons, in continuous (row, column) pixel indices.

Writing: marching squares at level 0.5 on the zero-padded slice (skimage.measure.find_contours).
The boundary runs half-way between every inside and outside pixel centre, so rasterising the
polygons again by pixel centres gives back exactly the same pixels, and the enclosed area differs
from the pixel count by about half a pixel per slice. Outer boundaries and hole boundaries come
out as separate polygons; every island is its own polygon. Readers combine the polygons of one
plane by the even-odd rule, which is how a stack of outer and inner contours is meant in an
RTSTRUCT (and what TPSs do with them).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours


def mask_to_polygons(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (each (N, 2) of row, column; last vertex not repeated) around the
    foreground of one slice: outer boundaries and holes, several islands each on their own.
    Collinear vertices are dropped, which changes nothing geometrically.

    Marching squares runs on the foreground's bounding box only (plus the one-pixel zero
    border): squares beyond it hold no edge, and their raster order is kept, so the polygons
    are the same as on the whole slice, at a fraction of the cost for a small ROI."""
    m = np.asarray(mask2d, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(m.any(axis=0))
    r0, c0 = int(rows[0]), int(cols[0])
    crop = m[r0:int(rows[-1]) + 1, c0:int(cols[-1]) + 1]
    padded = np.pad(crop, 1).astype(np.float32)
    offset = np.array([r0 - 1.0, c0 - 1.0])  # undo the padding and the crop
    polygons = []
    for contour in find_contours(padded, 0.5):
        if len(contour) < 4:  # a closed contour repeats its first vertex; < 3 distinct = nothing
            continue
        poly = _drop_collinear(contour[:-1] + offset)
        if len(poly) >= 3:
            polygons.append(poly)
    return polygons


def _drop_collinear(poly: np.ndarray) -> np.ndarray:
    prev = np.roll(poly, 1, axis=0)
    nxt = np.roll(poly, -1, axis=0)
    a, b = poly - prev, nxt - poly
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return poly[np.abs(cross) > 1e-9]


def polygons_to_mask(polygons: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a slice whose centres lie inside the polygons by the even-odd rule: a polygon
    inside another is a hole, one inside a hole an island again.

    A scanline fill over all edges of all polygons at once: every edge crossing a pixel-centre
    row toggles the parity of that row from the crossing to the right edge. Its cost grows with
    the number of edge crossings, not with polygon area times vertex count."""
    rows, cols = shape
    edges = []
    for poly in polygons:
        poly = np.asarray(poly, dtype=float)
        if len(poly) >= 3:
            edges.append(np.hstack([poly, np.roll(poly, -1, axis=0)]))
    out = np.zeros(shape, dtype=bool)
    if not edges:
        return out
    e = np.vstack(edges)
    r0, c0, r1, c1 = e.T
    lo, hi = np.minimum(r0, r1), np.maximum(r0, r1)
    first = np.maximum(np.ceil(lo), 0).astype(np.int64)          # rows y with lo <= y < hi
    last = np.minimum(np.ceil(hi) - 1, rows - 1).astype(np.int64)
    count = np.where(r0 != r1, last - first + 1, 0).clip(min=0)
    if not count.any():
        return out
    idx = np.repeat(np.arange(len(e)), count)
    y = first[idx] + (np.arange(idx.size) - np.repeat(np.cumsum(count) - count, count))
    x = c0[idx] + (y - r0[idx]) * (c1[idx] - c0[idx]) / (r1[idx] - r0[idx])
    start = np.clip(np.ceil(x), 0, cols).astype(np.int64)      # first column centre >= x
    toggles = np.bincount(y * (cols + 1) + start, minlength=rows * (cols + 1))
    parity = np.cumsum(toggles.reshape(rows, cols + 1)[:, :cols], axis=1) % 2
    return parity.astype(bool)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every foreground voxel; None if empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def remove_small_islands(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """The mask without 3-D connected components (face-connected) smaller than min_voxels:
    specks a model leaves behind, which would otherwise become contours of a few pixels.
    Components are counted in 3-D so that the thin caps of a real organ are kept.

    Labelling runs inside the mask's bounding box (no component reaches beyond it), with
    16-bit labels where they suffice; a mask with nothing to remove comes back as it is."""
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1:
        return mask
    box = bounding_box(mask)
    if box is None:
        return mask
    sub = mask[box]
    try:
        labels = np.empty(sub.shape, dtype=np.uint16)
        n = ndimage.label(sub, output=labels)
    except RuntimeError:  # more than 65535 components
        labels, n = ndimage.label(sub)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes < min_voxels
    small[0] = False
    if not small.any():
        return mask
    out = mask.copy()
    out[box] = sub & ~small[labels]
    return out


def polygon_area(poly: np.ndarray) -> float:
    """Unsigned shoelace area of a polygon (units of its coordinates squared)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
