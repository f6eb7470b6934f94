"""DVH engine: sub-voxel, trilinear, slab-exact DVHs and metrics for every ROI of a course, with
dicompyler-core as the selectable reference engine and a check against TPS-exported DVHs.

Entry points: ``compute_dvhs`` (datasets), ``dvh_for_folder`` (a course folder) and
``write_course_outputs`` (the stage's files). Conventions are in docs/DVH.md.
"""

from rtnode.lazy import lazy_exports

_EXPORTS = {
    "DVHResults": "compute", "compute_dvhs": "compute", "dvh_for_folder": "compute",
    "merge_results": "compute", "DVHConfig": "config", "RoiDVH": "engine",
    "DVHInputError": "errors", "CumulativeDVH": "histogram",
    "write_course_outputs": "outputs",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
