"""Trilinear dose interpolation on a sampling lattice, split into its separable parts.

Trilinear interpolation is bilinear in-plane followed by linear in z, and the two commute. The
dose frames an ROI spans are therefore interpolated in-plane once onto the ROI's lattice
(``frames_on_lattice``); the dose at any z is then a blend of two of those planes, which also
makes the dose along z within a slab exactly piecewise linear between frames.
"""

from __future__ import annotations

import numpy as np

from rtnode.dvh.dose import DoseVolume

#: tolerance (mm) for a point on the outermost voxel centres to count as inside the dose grid
EDGE_TOLERANCE_MM = 1e-6


def axis_weights(axis: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Lower neighbour index, fractional distance to the upper one, and inside-the-grid mask."""
    i = np.clip(np.searchsorted(axis, coords, side="right") - 1, 0, axis.size - 2)
    f = (coords - axis[i]) / (axis[i + 1] - axis[i])
    inside = (coords >= axis[0] - EDGE_TOLERANCE_MM) & (coords <= axis[-1] + EDGE_TOLERANCE_MM)
    return i, np.clip(f, 0.0, 1.0), inside


def frame_position(dose: DoseVolume, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower frame index and fraction towards the next frame for patient z (inside the grid)."""
    k, f, _ = axis_weights(dose.z, np.asarray(z, dtype=float))
    return k, f


def frames_on_lattice(dose: DoseVolume, k0: int, k1: int, xc: np.ndarray,
                      yc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear dose of frames k0..k1 at lattice points (x_i, y_j) and its in-plane gradient.

    Returns (dose, d/dx, d/dy), each (frames, rows, columns) in Gy and Gy/mm, and the
    (rows, columns) mask of lattice points inside the dose grid in-plane. The gradient lets a
    cell stand for the dose range over its area instead of one value at its centre.
    """
    ix, fx, in_x = axis_weights(dose.x, xc)
    iy, fy, in_y = axis_weights(dose.y, yc)
    c0, c1 = int(ix.min()), int(ix.max()) + 2
    r0, r1 = int(iy.min()), int(iy.max()) + 2
    sub = dose.values[k0:k1 + 1, r0:r1, c0:c1]
    dx = dose.x[ix + 1] - dose.x[ix]
    dy = (dose.y[iy + 1] - dose.y[iy])[:, None]
    ix -= c0
    iy -= r0
    left, right = sub[:, :, ix], sub[:, :, ix + 1]
    cols = left * (1.0 - fx) + right * fx
    slope_x = (right - left) / dx
    wy0, wy1 = (1.0 - fy)[:, None], fy[:, None]
    low, high = cols[:, iy, :], cols[:, iy + 1, :]
    planes = low * wy0 + high * wy1
    grad_x = slope_x[:, iy, :] * wy0 + slope_x[:, iy + 1, :] * wy1
    grad_y = (high - low) / dy
    return planes, grad_x, grad_y, in_y[:, None] & in_x[None, :]
