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


class DVHAccumulator:
    """Collects dose segments in batches (so an ROI can be processed in chunks of planes) and
    turns them into a cumulative DVH.

    The volume below dose d is sum w * clip((d - lo) / (hi - lo), 0, 1), a sum of ramps; each
    ramp is two kinks, so slopes and intercepts are binned at the kinks and integrated by one
    cumulative sum at the end — O(segments + bins), no per-segment loop. Segments of zero width
    are point doses and go to a plain histogram.
    """

    def __init__(self, bin_width: float, max_dose_gy: float):
        self.bin_width = bin_width
        # edges 0 .. n-1; the last must lie above every dose added
        self.n = int(max(max_dose_gy, 0.0) / bin_width) + 2
        size = self.n + 1
        self.slope = np.zeros(size)
        self.icpt = np.zeros(size)
        self.points = np.zeros(size)
        self.total = 0.0
        self.top = 0.0

    def _kink(self, u: np.ndarray) -> np.ndarray:
        """Index of the first bin edge strictly above u (u >= 0, so truncation is floor)."""
        return np.minimum(u.astype(np.int64) + 1, self.n)

    def add(self, lo: np.ndarray, hi: np.ndarray, weight_cc: np.ndarray) -> None:
        if lo.size == 0:
            return
        inv = 1.0 / self.bin_width
        u_lo = np.maximum(lo, 0.0) * inv
        u_hi = np.maximum(hi, 0.0) * inv
        self.top = max(self.top, float(u_hi.max()))
        if self.top + 2 > self.n:  # a dose above the expected maximum: grow the bins
            grow = int(self.top) + 2 - self.n
            self.slope, self.icpt, self.points = (np.pad(a, (0, grow)) for a in
                                                  (self.slope, self.icpt, self.points))
            self.n += grow
        self.total += float(weight_cc.sum())
        size = self.n + 1
        width = u_hi - u_lo
        point = width < 1e-6
        if point.any():
            u = 0.5 * (u_lo[point] + u_hi[point])
            self.points += np.bincount(self._kink(u), weights=weight_cc[point], minlength=size)
            ramp = ~point
            u_lo, u_hi, width, weight_cc = u_lo[ramp], u_hi[ramp], width[ramp], weight_cc[ramp]
        if u_lo.size:
            r = weight_cc / width
            ma, mb = self._kink(u_lo), self._kink(u_hi)
            self.slope += (np.bincount(ma, weights=r, minlength=size)
                           - np.bincount(mb, weights=r, minlength=size))
            self.icpt += (np.bincount(mb, weights=r * u_hi, minlength=size)
                          - np.bincount(ma, weights=r * u_lo, minlength=size))

    def result(self) -> CumulativeDVH:
        """The cumulative DVH, cut one edge above the highest dose added."""
        if self.total <= 0:
            return CumulativeDVH(self.bin_width, np.zeros(1))
        n = min(self.n, int(self.top) + 2)
        k = np.arange(n, dtype=float)
        below = (np.cumsum(self.slope)[:n] * k + np.cumsum(self.icpt)[:n]
                 + np.cumsum(self.points)[:n])
        volume = np.clip(self.total - below, 0.0, self.total)
        volume = np.minimum.accumulate(volume)
        volume[-1] = 0.0
        return CumulativeDVH(self.bin_width, volume)


def accumulate(lo: np.ndarray, hi: np.ndarray, weight_cc: np.ndarray,
               bin_width: float) -> CumulativeDVH:
    """Cumulative DVH of volumes spread uniformly over [lo, hi] Gy (lo == hi: a point dose)."""
    if lo.size == 0:
        return CumulativeDVH(bin_width, np.zeros(1))
    acc = DVHAccumulator(bin_width, float(np.max(hi)))
    acc.add(lo, hi, weight_cc)
    return acc.result()
