"""Intraclass correlation of features across perturbations.

ICC(2,1) (Shrout & Fleiss: two-way random effects, absolute agreement, single measurement) with
ROIs as subjects and perturbations as raters: 1 when a feature does not move under any
perturbation, lower the more the perturbation moves it relative to the spread between ROIs.
"""

from __future__ import annotations

import math

import numpy as np


def icc_2_1(values: np.ndarray) -> float:
    """values: (subjects, raters). A feature no perturbation changes has ICC 1 by definition
    (even when all subjects are equal); fewer than two subjects give NaN."""
    x = np.asarray(values, dtype=float)
    n, k = x.shape
    if n < 2 or k < 2 or not np.isfinite(x).all():
        return math.nan
    scale = max(float(np.abs(x).max()), 1e-300)
    if np.allclose(x, x[:, :1], rtol=0, atol=1e-12 * scale):
        return 1.0
    grand = x.mean()
    ms_r = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_c = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    sse = ((x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand) ** 2).sum()
    ms_e = sse / ((n - 1) * (k - 1))
    denom = ms_r + (k - 1) * ms_e + k * (ms_c - ms_e) / n
    return float((ms_r - ms_e) / denom) if denom > 0 else math.nan
