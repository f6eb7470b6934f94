"""Small phantom courses processed by a real node, for the tests of what rtnode holds
(delete, retention, Query/Retrieve): each is a 24-slice CT + RTSTRUCT + RTPLAN + RTDOSE."""

from __future__ import annotations

from pathlib import Path

from peers import storescu

from rtnode.phantom import CTGeometry, Patient, PhantomCourse


def small_course(folder: Path, patient_id: str) -> list[Path]:
    course = PhantomCourse(patient=Patient(patient_id=patient_id,
                                           patient_name=f"Test^{patient_id}"),
                           geometry=CTGeometry(rows=48, columns=48, pixel_spacing=(6.0, 6.0),
                                               slices=24, slice_spacing=5.0))
    return course.build().write(folder / patient_id)


def rules_dir(folder: Path, stages: list[str], name: str = "quick") -> Path:
    d = folder / "rules"
    d.mkdir(exist_ok=True)
    (d / "rules.yaml").write_text(f"rules:\n  - name: {name}\n    stages: [{', '.join(stages)}]\n")
    return d


def send_and_wait(node, files: list[Path], count: int, calling: str = "TPS") -> list[dict]:
    """Send files, then wait until `count` courses are settled (done/failed)."""
    r = storescu(node.port, files, calling=calling)
    assert r.returncode == 0, r.stdout[-2000:]
    return node.wait_courses(
        lambda cs: len(cs) >= count and all(c["state"] in ("done", "failed") for c in cs),
        timeout=180, what=f"{count} settled course(s)")
