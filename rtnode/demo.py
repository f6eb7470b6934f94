"""``rtnode demo``: a phantom course sent to the node and followed until its stages finish.

What a newcomer needs to see rtnode work a minute after installing it, with nothing to hand:
the course is generated (a water phantom with target, organ at risk and body contours, a plan
and a dose with a known gradient), sent by C-STORE like a TPS would, and watched through the
node's index until every stage has finished.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from rtnode.config import Config
from rtnode.dicom.scu import Peer
from rtnode.phantom import CTGeometry, Patient, PhantomCourse


def make_demo_course(folder: Path) -> tuple[str, list[Path]]:
    stamp = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    patient = Patient(patient_id=f"DEMO{stamp}", patient_name="Demo^Phantom",
                      study_description="rtnode demo: RT planning phantom")
    course = PhantomCourse(patient=patient, dose=conformal_dose,
                           geometry=CTGeometry(rows=128, columns=128, slices=64,
                                               slice_spacing=2.5))
    return patient.patient_id, course.build().write(folder)


def conformal_dose(x, y, z):
    """60 Gy over the 25 mm PTV sphere at the origin, falling off smoothly outside it, so the
    demo's DVHs look like a plan's: PTV near 60 Gy, organs at risk lower, BODY spread out."""
    r = np.sqrt(x**2 + y**2 + z**2)
    return 61.0 * np.exp(-np.maximum(r - 24.0, 0.0) ** 2 / (2 * 14.0**2))


def follow(config: Config, patient_id: str, report: Callable[[str], None],
           timeout: float) -> dict | None:
    """Poll the node's index until the demo course settles; report every change of state."""
    from rtnode.cli import course_json
    from rtnode.courses.book import CourseBook
    from rtnode.store.index import index_exists, open_index

    if not index_exists(config):
        report(f"no index at {config.storage_root / 'index.sqlite'}: cannot follow the course "
               "from here")
        return None
    book = CourseBook(open_index(config))
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            rows = book.courses(patient_id=patient_id)
            if rows:
                course = course_json(book, rows[0], config)
                changes = {"course": course["state"],
                           **{s["stage"]: s["state"] for s in course["stages"]}}
                for key, value in changes.items():
                    if seen.get(key) != value:
                        seen[key] = value
                        report(f"{key}: {value}" + _hint(key, value, config))
                if course["state"] in ("done", "failed", "cancelled"):
                    return course
            time.sleep(0.5)
    finally:
        book.index.close()
    report(f"still not finished after {timeout:.0f} s; see `rtnode courses`")
    return None


def _hint(key: str, state: str, config: Config) -> str:
    if key == "course" and state == "receiving":
        return f" (waits until nothing new arrives for {config.courses.quiet_seconds:g} s)"
    return ""


def run_demo(config: Config, peer: Peer, report: Callable[[str], None],
             timeout: float = 600) -> dict | None:
    """Send a fresh phantom course to peer and follow it; None when it cannot be followed."""
    from rtnode.dicom.send import send_files

    with tempfile.TemporaryDirectory(prefix="rtnode-demo-") as tmp:
        patient_id, files = make_demo_course(Path(tmp))
        report(f"generated patient {patient_id}: {len(files)} objects (CT, RTSTRUCT, RTPLAN, "
               f"RTDOSE)")
        sent = send_files(files, peer, calling_ae="RTNODE_DEMO", retries=0)
        if not sent.ok:
            raise DemoError(f"{sent.reason}: is the node running? (`rtnode serve`)")
        report(f"sent {len(files)} of {len(files)} objects to {peer}")
    return follow(config, patient_id, report, timeout)


class DemoError(RuntimeError):
    pass
