"""Which ROIs are extracted: skip patterns and voxel limits, each skip with its reason."""

from __future__ import annotations

import fnmatch
from typing import Iterable


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Case-insensitive glob match (ROI naming is not consistent in case across TPSs)."""
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


def voxel_limit_reason(voxels: int, min_voxels: int, max_voxels: int) -> str | None:
    """None when the ROI's voxel count is within limits, else why it is skipped."""
    if voxels == 0:
        return "empty on the image grid (no voxel centre inside its contours)"
    if voxels < min_voxels:
        return f"{voxels} voxels, fewer than min_voxels {min_voxels}"
    if voxels > max_voxels:
        return f"{voxels} voxels, more than max_voxels {max_voxels}"
    return None
