"""Cumulative DVH from dose segments.

Within the slab of a contour plane the trilinearly interpolated dose at a fixed (x, y) is linear
in z between two dose frames, so every lattice cell contributes straight-line pieces: its volume
spread uniformly over a dose interval [lo, hi]. Accumulating those pieces exactly (rather than
sampling them) removes the z-sampling error from the DVH; in-plane sampling is the only
approximation left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CumulativeDVH:
    """volume_cc[k] = volume receiving at least k * bin_width Gy (k = 0 .. K, last one 0)."""

    bin_width: float
    volume_cc: np.ndarray

    @property
    def doses(self) -> np.ndarray:
        return np.arange(self.volume_cc.size) * self.bin_width

    @property
    def total_cc(self) -> float:
        return float(self.volume_cc[0]) if self.volume_cc.size else 0.0

    def volume_at(self, dose_gy: float) -> float:
        """Volume (cc) receiving at least dose_gy, linear between bin edges."""
        if self.volume_cc.size == 0:
            return 0.0
        return float(np.interp(dose_gy, self.doses, self.volume_cc, left=self.total_cc,
                               right=0.0))

    def dose_at(self, volume_cc: float) -> float:
        """Smallest dose received by the hottest volume_cc (Gy), linear between bin edges."""
        v = self.volume_cc
        if v.size == 0 or self.total_cc <= 0:
            return float("nan")
        volume_cc = min(max(volume_cc, 0.0), self.total_cc)
        k = int(np.searchsorted(-v, -volume_cc, side="right")) - 1  # last k with v[k] >= target
        if k >= v.size - 1:
            return float(k * self.bin_width)
        drop = v[k] - v[k + 1]
        frac = (v[k] - volume_cc) / drop if drop > 0 else 0.0
        return float((k + frac) * self.bin_width)


def accumulate(lo: np.ndarray, hi: np.ndarray, weight_cc: np.ndarray,
               bin_width: float) -> CumulativeDVH:
    """Cumulative DVH of volumes spread uniformly over [lo, hi] Gy (lo == hi: a point dose).

    The volume below dose d is sum w * clip((d - lo) / (hi - lo), 0, 1), a sum of ramps; each
    ramp is two kinks, so slopes and intercepts are binned at the kinks and integrated by a
    cumulative sum — O(segments + bins), no per-segment loop.
    """
    if lo.size == 0:
        return CumulativeDVH(bin_width, np.zeros(1))
    inv = 1.0 / bin_width
    u_lo = np.maximum(lo, 0.0) * inv
    u_hi = np.maximum(hi, 0.0) * inv
    n = int(u_hi.max()) + 2  # edges 0 .. n-1, the last above every dose
    size = n + 1
    width = u_hi - u_lo
    point = width < 1e-6
    below = np.zeros(n)
    k = np.arange(n, dtype=float)

    def kink(u: np.ndarray) -> np.ndarray:
        """Index of the first bin edge strictly above u (u >= 0, so truncation is floor)."""
        return np.minimum(u.astype(np.int64) + 1, n)

    if point.all():
        m = kink(0.5 * (u_lo + u_hi))
        below += np.cumsum(np.bincount(m, weights=weight_cc, minlength=size))[:n]
    elif point.any():
        u = 0.5 * (u_lo[point] + u_hi[point])
        below += np.cumsum(np.bincount(kink(u), weights=weight_cc[point], minlength=size))[:n]
        ramp = ~point
        u_lo, u_hi, width, weight_cc_r = u_lo[ramp], u_hi[ramp], width[ramp], weight_cc[ramp]
        below += _ramps(u_lo, u_hi, weight_cc_r / width, kink, size, n, k)
    else:
        below += _ramps(u_lo, u_hi, weight_cc / width, kink, size, n, k)
    total = float(weight_cc.sum())
    volume = np.clip(total - below, 0.0, total)
    volume = np.minimum.accumulate(volume)
    volume[-1] = 0.0
    return CumulativeDVH(bin_width, volume)


def _ramps(a: np.ndarray, b: np.ndarray, r: np.ndarray, kink, size: int, n: int,
           k: np.ndarray) -> np.ndarray:
    """Volume below every bin edge k of ramps rising at rate r from a to b (bin units)."""
    ma, mb = kink(a), kink(b)
    slope = np.bincount(ma, weights=r, minlength=size) - np.bincount(mb, weights=r,
                                                                      minlength=size)
    icpt = np.bincount(mb, weights=r * b, minlength=size) - np.bincount(ma, weights=r * a,
                                                                         minlength=size)
    return np.cumsum(slope)[:n] * k + np.cumsum(icpt)[:n]
