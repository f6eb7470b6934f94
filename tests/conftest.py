"""Shared fixtures: phantom courses written once per session, and a running node per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from peers import NodeProcess, write_config  # noqa: E402

from rtnode.phantom import CTGeometry, Patient, PhantomCourse  # noqa: E402

# Worker processes started by tests must not fan out BLAS threads over a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def course_100(tmp_path_factory) -> dict[str, list[Path]]:
    """A 100-slice CT series plus RTSTRUCT, RTPLAN and RTDOSE, as files grouped by modality."""
    folder = tmp_path_factory.mktemp("course100")
    course = PhantomCourse(patient=Patient(patient_id="RX100", patient_name="Hundred^Slices"),
                           geometry=CTGeometry(rows=96, columns=96, pixel_spacing=(3.0, 3.0),
                                               slices=100, slice_spacing=2.0)).build()
    paths = course.write(folder)
    by_modality: dict[str, list[Path]] = {}
    for p in paths:
        by_modality.setdefault(p.name.split("_")[0], []).append(p)
    return by_modality


@pytest.fixture
def node_factory(tmp_path):
    """Start nodes with given config sections; every one still running is stopped at the end."""
    started: list[NodeProcess] = []

    def make(env: dict[str, str] | None = None, **sections) -> NodeProcess:
        folder = tmp_path / f"node{len(started)}"
        folder.mkdir()
        node = NodeProcess(write_config(folder, **sections), env=env).start()
        started.append(node)
        return node

    yield make
    for node in started:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


@pytest.fixture
def node(node_factory) -> NodeProcess:
    return node_factory()
