"""Benchmark: the qc stage's work on a 30-ROI course with the dvh stage's tables present (QC
reads dvh_metrics.csv / dvh_curves.parquet) vs absent (QC computes the DVHs itself, as it did
before reusing them). Both runs check, draw and write the same report; prints seconds (best of
--repeat, after a warm-up so imports do not count) and the ratio.

    python scripts/bench/qc.py [--rois 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rtnode.dvh import compute_dvhs, write_course_outputs
from rtnode.phantom.autoseg import DEFAULT_GRADIENT, many_shapes
from rtnode.phantom.course import PhantomCourse, linear_dose
from rtnode.qc.course import QCCourse
from rtnode.qc.run import write_qc


def one_run(pc: PhantomCourse, out: Path, dvh_dir: Path | None) -> float:
    course = QCCourse("CT", list(pc.ct), {"manual": [pc.rtstruct]}, [pc.rtdose], [pc.rtplan],
                      dvh_dir=dvh_dir)
    start = time.perf_counter()
    write_qc(course, out)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rois", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pc = PhantomCourse(shapes=many_shapes(args.rois, seed=0),
                       dose=linear_dose(60.0, DEFAULT_GRADIENT)).build()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_course_outputs([compute_dvhs(pc.rtstruct, [pc.rtdose], [pc.rtplan],
                                           source="manual")], root / "dvh")
        dvh_stage = time.perf_counter() - t0
        one_run(pc, root / "warm", root / "dvh")
        reuse = min(one_run(pc, root / f"r{k}", root / "dvh") for k in range(args.repeat))
        compute = min(one_run(pc, root / f"c{k}", None) for k in range(args.repeat))
    print(f"course: {args.rois} ROIs + BODY, CT {len(pc.ct)} slices; dvh stage itself "
          f"{dvh_stage:.2f} s")
    print(f"{'qc, DVHs computed by QC':32} {compute:7.2f} s")
    print(f"{'qc, dvh stage tables reused':32} {reuse:7.2f} s")
    print(f"ratio computed / reused: {compute / reuse:.2f}x "
          f"({100 * (compute - reuse) / compute:.0f} % of qc time saved)")


if __name__ == "__main__":
    main()
