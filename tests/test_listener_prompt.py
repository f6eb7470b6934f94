"""The listener's prompt hand-overs (dicom/prompt.py) against real peers: an idle association
waits instead of spinning, every association gives its wake pipe back, and a burst of stores
through one association is answered in order with nothing lost."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from peers import echoscu, raw_association, store_responses, storescu
from rtnode.phantom import CTGeometry, Patient, PhantomCourse

pytestmark = pytest.mark.network

VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_an_idle_association_waits_without_spinning(node):
    pid = node.proc.pid
    assoc = raw_association(node.port, [(VERIFICATION, EXPLICIT_LE)])
    try:
        time.sleep(0.5)  # the association's threads are running
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(3.0)
        used = cpu_seconds(pid) - cpu0
        wall = time.monotonic() - t0
        # a reactor that polled without waiting would hold a core: ~1 CPU second per second
        assert used < 0.3 * wall, f"{used:.2f} CPU s in {wall:.1f} s with one idle association"
        assert assoc.send_c_echo().Status == 0  # and it still answers at once when asked
    finally:
        assoc.release()


def test_every_association_gives_its_wake_pipe_back(node):
    pid = node.proc.pid
    assert echoscu(node.port).returncode == 0  # the listener's own descriptors are open
    time.sleep(0.5)
    before = open_fds(pid)
    for _ in range(30):
        assert echoscu(node.port).returncode == 0
    deadline = time.monotonic() + 10
    while open_fds(pid) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_fds(pid) <= before + 2, "descriptors left behind by finished associations"


def test_a_burst_through_one_association_is_answered_in_order(node, tmp_path):
    course = PhantomCourse(patient=Patient(patient_id="PROMPT1"),
                           geometry=CTGeometry(rows=64, columns=64, slices=120))
    files = course.build(with_rt=False).write(tmp_path / "ct")
    r = storescu(node.port, files)
    assert store_responses(r.stdout) == ["Success"] * len(files)
    assert node.cli_json("status")["counts"]["instances"] == len(files)
