"""kill -9 while storescu is sending: what was acknowledged survives, nothing partial is indexed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from peers import dcmtk_env, require, store_responses, storescu
from rtnode.phantom import CTGeometry, Patient, PhantomCourse
from rtnode.store.part10 import split_part10

pytestmark = pytest.mark.network

N = 300
KILL_AFTER = 120  # acknowledged instances seen by storescu before the node is killed


@pytest.fixture(scope="module")
def ct_300(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct300")
    course = PhantomCourse(patient=Patient(patient_id="CRASH1"),
                           geometry=CTGeometry(rows=128, columns=128, slices=N,
                                               slice_spacing=1.0)).build(with_rt=False)
    return course.write(folder)


def send_until_killed(node, files) -> list[str]:
    """Stream storescu's log; kill -9 the node after KILL_AFTER successes. Returns the
    SOPInstanceUIDs storescu saw acknowledged with success before the connection died."""
    cmd = [require("storescu"), "-v", "-nh", "-aet", "STORESCU", "-aec", "RTNODE",
           "127.0.0.1", str(node.port), *map(str, files)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dcmtk_env())
    acknowledged: list[str] = []
    current = None
    killed = False
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(current)
            if len(acknowledged) >= KILL_AFTER and not killed:
                node.stop(signal.SIGKILL)
                killed = True
    proc.wait(60)
    assert killed, "storescu finished before the node could be killed"
    return acknowledged


def test_kill9_mid_send_loses_nothing_acknowledged(node, ct_300):
    acknowledged = send_until_killed(node, ct_300)
    assert KILL_AFTER <= len(acknowledged) < N
    assert node.wait_no_processes() == [], "worker processes outlived the killed node"

    # the storage as the crash left it, before any restart: every indexed row is a whole file
    db = sqlite3.connect(node.storage / "index.sqlite")
    rows = db.execute("SELECT sop_instance_uid, path, size FROM instances").fetchall()
    db.close()
    for _, path, size in rows:
        f = node.storage / path
        assert f.stat().st_size == size
        pydicom.dcmread(f)  # parses whole

    # restart: partial writes are dropped, every acknowledged instance is there and indexed
    node.start()
    assert not list((node.storage / "tmp").iterdir())
    indexed = {row["sop_instance_uid"]: row for row in node.cli_json("instances")}
    for path in acknowledged:
        sent_meta, sent = split_part10(open(path, "rb").read())
        uid = sent_meta.MediaStorageSOPInstanceUID
        assert uid in indexed, f"acknowledged {uid} missing after kill -9"
        assert split_part10((node.storage / indexed[uid]["path"]).read_bytes())[1] == sent

    # the resend completes: everything succeeds, what was already there counts as duplicate
    r = storescu(node.port, ct_300)
    assert store_responses(r.stdout) == ["Success"] * N
    status = node.cli_json("status")
    assert status["counts"]["instances"] == N
    assert status["events"]["duplicate"] >= len(acknowledged)
    for f in node.storage.joinpath("dicom").rglob("*.dcm"):
        pydicom.dcmread(f)


def test_consumer_whose_node_died_before_it_started_ends_itself(tmp_path):
    """A node killed while its consumer is still importing: the consumer, left to init before it
    could ask to die with its parent, must notice and end instead of taking tasks forever."""
    script = tmp_path / "orphan.py"
    script.write_text(
        "import os, subprocess, sys, time\n"
        "env = dict(os.environ, RTNODE_PARENT_PID=str(os.getpid()))\n"
        "child = subprocess.Popen([sys.executable, '-c',\n"
        "    'import time; time.sleep(1.0)\\n'\n"
        "    'from rtnode.queue.worker import PARENT_PID_ENV, die_with_parent\\n'\n"
        "    'import os; die_with_parent(int(os.environ[PARENT_PID_ENV]))\\n'\n"
        "    'open(os.environ[\"MARK\"], \"w\").write(\"alive\"); time.sleep(30)'], env=env)\n"
        "print(child.pid, flush=True)\n"
        "os._exit(0)  # the parent dies before the child asks to die with it\n")
    mark = tmp_path / "alive"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=dict(os.environ, MARK=str(mark)), timeout=60)
    child = int(out.stdout.split()[0])
    deadline = time.monotonic() + 60
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{child}/stat").read_text().split(") ", 1)[1][0]
        if state == "Z":
            break
        time.sleep(0.1)
    gone = not Path(f"/proc/{child}").exists() or \
        Path(f"/proc/{child}/stat").read_text().split(") ", 1)[1][0] == "Z"
    assert gone, "the orphaned consumer lived on"
    assert not mark.exists(), "the orphaned consumer ran past die_with_parent"
