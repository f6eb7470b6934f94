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


def test_islands_removed_in_the_bounding_box_as_on_the_whole_grid():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    m = np.zeros((20, 60, 60), dtype=bool)
    m[4:16, 10:50, 15:40] = rng.random((12, 40, 25)) < 0.6
    labels, _ = ndimage.label(m)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= 10
    keep[0] = False
    assert (~keep[1:]).any() and keep[1:].any()  # both kinds present
    assert np.array_equal(remove_small_islands(m, 10), keep[labels])
    single = np.zeros((5, 8, 8), dtype=bool)
    single[1:4, 2:6, 2:6] = True
    assert np.array_equal(remove_small_islands(single, 10), single)


def test_polygons_of_a_cropped_search_are_those_of_the_whole_slice():
    from skimage.measure import find_contours

    rng = np.random.default_rng(5)
    m = np.zeros((80, 90), dtype=bool)
    m[20:60, 30:70] = rng.random((40, 40)) < 0.7
    whole = [c[:-1] - 1.0 for c in find_contours(np.pad(m, 1).astype(np.float32), 0.5)
             if len(c) >= 4]
    fast = mask_to_polygons(m)
    assert len(fast) > 5
    from rtnode.rtstruct.contours import _drop_collinear
    expected = [p for p in (_drop_collinear(c) for c in whole) if len(p) >= 3]
    assert len(fast) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(fast, expected))


def test_contour_data_text_is_format_ds_of_every_value():
    from rtnode.rtstruct.writer import format_ds, format_ds_values

    rng = np.random.default_rng(9)
    values = np.concatenate([
        rng.uniform(-600, 600, 5000), np.round(rng.uniform(-600, 600, 500), 1),
        np.round(rng.uniform(-600, 600, 500)), [0.0, -0.0, -0.00004, 0.00004, -0.00005,
                                                 0.00005, 10.0, -10.0, 100.5, 1e-9, -1e-9,
                                                 123456789.12345, -987654321.5]])
    assert format_ds_values(values) == "\\".join(format_ds(v) for v in values)
    huge = np.array([1.5, 3e12, -2.5e15])  # beyond 16 characters at 4 decimals
    assert format_ds_values(huge) == "\\".join(format_ds(v) for v in huge)
    assert format_ds_values(np.array([])) == ""


def test_contour_data_is_written_as_formatted_not_reencoded(tmp_path):
    """save_as keeps ContourData's encoded text (no conversion to DS objects and back)."""
    import pydicom

    from rtnode.phantom import CTGeometry, Patient, make_ct_series
    from rtnode.rtstruct.writer import save_rtstruct, write_rtstruct

    ct = make_ct_series(Patient(), CTGeometry(rows=32, columns=32, slices=4),
                        lambda x, y, z: np.zeros(x.shape))
    mask = np.zeros((4, 32, 32), dtype=bool)
    mask[1:3, 5:20, 7:25] = True
    ds = write_rtstruct(ct, {"A": mask})
    item = ds.ROIContourSequence[0].ContourSequence[0]
    raw = item.get_item(0x30060050).value
    path = save_rtstruct(ds, tmp_path / "rs.dcm")
    assert item.get_item(0x30060050).is_raw  # not decoded by writing
    back = pydicom.dcmread(path).ROIContourSequence[0].ContourSequence[0]
    assert back.get_item(0x30060050).value == raw


def test_islands_beyond_16_bit_labels_are_still_counted():
    m = np.zeros((2, 600, 640), dtype=bool)
    m[:, ::2, :600:2] = True           # 90 000 two-voxel islands: more than 16-bit labels hold
    m[:, :, 610:] = True               # one big component
    out = remove_small_islands(m, 3)
    assert not out[:, :, :600].any() and out[:, :, 610:].all()
