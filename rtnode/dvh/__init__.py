"""DVH engine: sub-voxel, trilinear, slab-exact DVHs and metrics for every ROI of a course, with
dicompyler-core as the selectable reference engine and a check against TPS-exported DVHs.

Entry points: ``compute_dvhs`` (datasets), ``dvh_for_folder`` (a course folder) and
``write_course_outputs`` (the stage's files). Conventions are in docs/DVH.md.
"""

from rtnode.dvh.compute import DVHResults, compute_dvhs, dvh_for_folder, merge_results
from rtnode.dvh.config import DVHConfig
from rtnode.dvh.errors import DVHInputError
from rtnode.dvh.outputs import write_course_outputs

__all__ = ["DVHConfig", "DVHInputError", "DVHResults", "compute_dvhs", "dvh_for_folder",
           "merge_results", "write_course_outputs"]
