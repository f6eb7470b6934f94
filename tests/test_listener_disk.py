"""A full disk (a small tmpfs): the node stays up and answers 0xA700 with a reason, starts on
the full disk, and stores again once space is freed. Needs root to mount; skips otherwise."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage

from peers import (NodeProcess, context_id, echoscu, encode_dataset, raw_association,
                   raw_c_store, store_responses, storescu, write_config)

pytestmark = pytest.mark.network

CT = str(CTImageStorage)


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path) -> Path:
    """Write until the filesystem says ENOSPC."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\xff" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def store_one(port: int, path: Path):
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    assoc = raw_association(port, [(CT, ExplicitVRLittleEndian)])
    try:
        return raw_c_store(assoc, context_id(assoc, CT), CT, ds.SOPInstanceUID,
                           encode_dataset(ds))
    finally:
        assoc.release()


def test_full_disk_refuses_stores_keeps_serving_and_recovers(small_disk, tmp_path, course_100):
    folder = tmp_path / "cfg"
    folder.mkdir()
    config = write_config(folder, storage={"root": str(small_disk / "storage"),
                                           "reserve_mb": 4.0})
    node = NodeProcess(config).start()
    try:
        assert store_responses(storescu(node.port, course_100["CT"][:5]).stdout) == \
            ["Success"] * 5
        deadline = time.monotonic() + 30
        while not (node.storage / "reserve").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (node.storage / "reserve").exists(), "the reserve was not taken"

        filler = fill(small_disk)
        rsp = store_one(node.port, course_100["CT"][10])
        assert rsp.Status == 0xA700 and rsp.ErrorComment, rsp
        r = storescu(node.port, course_100["CT"][11:14])
        assert store_responses(r.stdout) == ["Refused: OutOfResources"] * 3
        time.sleep(7)  # a heartbeat or two on the full disk
        assert node.proc.poll() is None, node.log[-3000:]
        assert echoscu(node.port).returncode == 0

        # restart on the full disk
        assert node.stop() == 0
        node.start(timeout=60)
        assert "STORAGE FULL at start-up" in node.log
        rsp = store_one(node.port, course_100["CT"][20])
        assert rsp.Status == 0xA700, rsp

        # space freed: stores go in again
        filler.unlink()
        rsp = store_one(node.port, course_100["CT"][21])
        assert rsp.Status == 0x0000, (rsp.Status, rsp.ErrorComment)
        assert store_responses(storescu(node.port, course_100["CT"][22:25]).stdout) == \
            ["Success"] * 3
        counts = node.cli_json("status")["counts"]
        assert counts["instances"] == 9
        assert node.cli_json("status")["events"]["rejected"] >= 5
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()
        os.sync()
