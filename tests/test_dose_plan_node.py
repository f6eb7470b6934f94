"""A replan that arrives after its course ran, through a running node: revision 2 reports the
replan's dose as the course dose, never plan A + plan B, and says so in words."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dose_courses import A_GY, B_GY, replan_predecessor

from peers import store_responses, storescu

pytestmark = pytest.mark.network


def settled(courses: list[dict], revision: int) -> bool:
    return len(courses) == 1 and courses[0]["revision"] == revision and \
        courses[0]["state"] in ("done", "failed")


def stage(course: dict, name: str) -> dict:
    return next(s for s in course["stages"] if s["stage"] == name)


def write(datasets, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        paths.append(folder / f"{ds.Modality}_{n:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def course_dose_ptv(course: dict) -> pd.DataFrame:
    frame = pd.read_csv(Path(course["output_dir"]) / "dvh_metrics.csv")
    return frame[frame.roi_name == "PTV"].set_index("dose_source")


def test_a_replan_arriving_later_supersedes_its_plan_in_revision_2(node, tmp_path):
    s = replan_predecessor("LATEREPLAN")
    plan_a, plan_b = s.plans
    dose_a, dose_b = s.doses
    first = write([*s.base.ct, s.base.rtstruct, plan_a, dose_a], tmp_path / "first")
    assert store_responses(storescu(node.port, first).stdout) == ["Success"] * len(first)
    c1 = node.wait_courses(lambda cs: settled(cs, 1), what="revision 1")[0]
    assert stage(c1, "dvh")["state"] == "done"
    ptv = course_dose_ptv(c1)
    assert list(ptv.index) == ["A"] and bool(ptv.loc["A", "course_dose"])
    assert ptv.loc["A", "dmean_gy"] == pytest.approx(A_GY, abs=0.05)

    second = write([plan_b, dose_b], tmp_path / "second")
    assert store_responses(storescu(node.port, second).stdout) == ["Success"] * 2
    c2 = node.wait_courses(lambda cs: settled(cs, 2), what="revision 2")[0]
    assert stage(c2, "dvh")["state"] == "done"
    ptv = course_dose_ptv(c2)
    assert ptv.loc[ptv.course_dose.astype(bool)].index.tolist() == ["B"]
    assert ptv.loc["B", "dmean_gy"] == pytest.approx(B_GY, abs=0.05)  # not A + B
    assert ptv.loc["A", "dmean_gy"] == pytest.approx(A_GY, abs=0.05)  # kept as its own source
    assert not bool(ptv.loc["A", "course_dose"])

    shown = node.cli("course", "show", str(c2["id"]))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    words = " ".join(shown.stdout.split())
    assert "Course dose: 'B'" in words and "PREDECESSOR" in words and "superseded" in words
