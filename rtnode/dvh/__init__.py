"""DVH engine: sub-voxel, trilinear, slab-exact DVHs and metrics for every ROI of a course, with
dicompyler-core as the selectable reference engine and a check against TPS-exported DVHs.

Entry points: ``compute_dvhs`` (datasets), ``dvh_for_folder`` (a course folder) and
``write_course_outputs`` (the stage's files). Conventions are in docs/DVH.md.
"""

import importlib
from typing import Any

# Lazy: ``rtnode.config`` imports DVHConfig from here, and must not pull numpy/pandas/matplotlib
# into every process (worker processes cap their BLAS threads before numpy is first imported).
_EXPORTS = {
    "DVHResults": "compute", "compute_dvhs": "compute", "dvh_for_folder": "compute",
    "merge_results": "compute", "DVHConfig": "config", "RoiDVH": "engine",
    "DVHInputError": "errors", "CumulativeDVH": "histogram",
    "write_course_outputs": "outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"rtnode.dvh.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rtnode.dvh' has no attribute {name!r}")
