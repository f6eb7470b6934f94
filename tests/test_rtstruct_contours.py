"""Mask slice ↔ polygons: exact round trips on awkward masks, and the even-odd fill agrees with
an independent point-in-polygon rasteriser on arbitrary (even self-intersecting) polygons."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import polygon as skimage_polygon

from rtnode.rtstruct.contours import mask_to_polygons, polygons_to_mask, remove_small_islands


@pytest.mark.parametrize("seed", range(5))
def test_random_masks_round_trip_exactly(seed):
    rng = np.random.default_rng(seed)
    for opened in (False, True):
        m = rng.random((37, 41)) < 0.45
        if opened:
            m = ndimage.binary_opening(m)
        assert np.array_equal(polygons_to_mask(mask_to_polygons(m), m.shape), m)


def test_ring_with_island_in_the_hole():
    yy, xx = np.mgrid[:50, :50]
    d = np.hypot(yy - 25, xx - 25)
    m = (d < 20) & (d >= 12) | (d < 5)
    polys = mask_to_polygons(m)
    assert len(polys) == 3  # outer, hole, island
    assert np.array_equal(polygons_to_mask(polys, m.shape), m)


def test_fill_matches_point_in_polygon_reference():
    rng = np.random.default_rng(7)
    for _ in range(200):
        poly = rng.random((int(rng.integers(3, 9)), 2)) * [30, 40] - 3
        ref = np.zeros((30, 40), bool)
        rr, cc = skimage_polygon(poly[:, 0], poly[:, 1], (30, 40))
        ref[rr, cc] = True
        assert np.array_equal(polygons_to_mask([poly], (30, 40)), ref)


def test_polygon_area_is_close_to_pixel_count():
    yy, xx = np.mgrid[:80, :80]
    m = np.hypot(yy - 40, xx - 40) < 30
    (poly,) = mask_to_polygons(m)
    x, y = poly[:, 1], poly[:, 0]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert abs(area - m.sum()) <= 1.0  # marching squares cuts half a pixel in all


def test_remove_small_islands_counts_in_3d():
    m = np.zeros((5, 20, 20), bool)
    m[:, 2:4, 2:4] = True     # 20 voxels through all slices, 4 per slice: kept
    m[2, 10, 10] = True       # a single voxel: dropped
    out = remove_small_islands(m, 10)
    assert out[:, 2:4, 2:4].all() and not out[2, 10, 10]
