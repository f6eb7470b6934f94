"""``rtnode export --pseudonymise``: the exported tables hold no original PatientID, name,
date or UID of any course; pseudonyms are stable across runs with the same key and differ with
another; the mapping file is 0600 and leads back to the originals."""

from __future__ import annotations

import csv
import os
import stat
import subprocess

import pandas as pd
import pytest

from held import rules_dir, send_and_wait, small_course
from peers import RTNODE

pytestmark = pytest.mark.network

KEY = "a-secret-key-of-the-site-0001"


@pytest.fixture(scope="module")
def exported_node(tmp_path_factory):
    from peers import NodeProcess, write_config

    folder = tmp_path_factory.mktemp("pseudo")
    rules = rules_dir(folder, ["manifest", "dvh", "qc"])
    node = NodeProcess(write_config(folder, courses={"rules_dir": str(rules),
                                                     "quiet_seconds": 1.0})).start()
    try:
        files = small_course(folder, "PSEUDO1") + small_course(folder, "PSEUDO2")
        send_and_wait(node, files, 2)
        yield node, files
    finally:
        node.stop()


def export(node, out, *args, key=KEY):
    env = {**node.env, "RTNODE_EXPORT__PSEUDONYM_KEY": key} if key else dict(node.env)
    env.pop("RTNODE_CONFIG", None)
    return subprocess.run([*RTNODE, "export", "--out", str(out), *args, "--config",
                           str(node.config)], capture_output=True, text=True, timeout=300,
                          env=env)


def originals(files) -> set[str]:
    import pydicom

    found = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        found |= {ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID, ds.SeriesInstanceUID,
                  ds.SOPInstanceUID, str(ds.get("FrameOfReferenceUID", ""))}
    return found - {""}


def test_no_original_identifier_and_stable_pseudonyms(exported_node, tmp_path):
    node, files = exported_node
    plain = export(node, tmp_path / "plain.csv", key=None)
    assert plain.returncode == 0, plain.stderr
    assert "PSEUDO1" in (tmp_path / "plain_dvh.csv").read_text()  # the check below can fail

    r1 = export(node, tmp_path / "a.csv", "--pseudonymise", "--mapping",
                str(tmp_path / "private" / "map.csv"))
    assert r1.returncode == 0, r1.stderr
    text = "".join((tmp_path / f"a_{t}.csv").read_text() for t in ("dvh", "qc"))
    for ident in originals(files):
        assert ident not in text, ident
    dvh = pd.read_csv(tmp_path / "a_dvh.csv", dtype=str)
    assert len(dvh) > 0 and dvh["patient_id"].str.match(r"^P[A-Z2-7]{12}$").all()
    assert dvh["study_uid"].str.startswith("2.25.").all()
    assert dvh["patient_id"].nunique() == 2

    # same key: the same pseudonyms; another key: others
    r2 = export(node, tmp_path / "b.csv", "--pseudonymise", "--mapping",
                str(tmp_path / "private" / "map.csv"))
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "a_dvh.csv").read_text() == (tmp_path / "b_dvh.csv").read_text()
    r3 = export(node, tmp_path / "c.csv", "--pseudonymise", "--mapping",
                str(tmp_path / "other.csv"), key="another-key-entirely-000")
    assert r3.returncode == 0, r3.stderr
    other = pd.read_csv(tmp_path / "c_dvh.csv", dtype=str)
    assert set(other["patient_id"]).isdisjoint(set(dvh["patient_id"]))

    # the mapping file: owner-only, leads back to the originals
    mapping = tmp_path / "private" / "map.csv"
    assert stat.S_IMODE(os.stat(mapping).st_mode) == 0o600
    rows = list(csv.DictReader(mapping.open()))
    back = {(r["kind"], r["pseudonym"]): r["original"] for r in rows}
    assert {back[("patient_id", p)] for p in dvh["patient_id"]} == {"PSEUDO1", "PSEUDO2"}
    assert all(back[("uid", u)] in originals(files) for u in dvh["study_uid"])


def test_config_default_and_a_missing_key_is_a_clear_error(exported_node, tmp_path):
    node, _ = exported_node
    r = export(node, tmp_path / "x.csv", "--pseudonymise", key=None)
    assert r.returncode == 2 and "export.pseudonym_key" in r.stderr
    assert not (tmp_path / "x_dvh.csv").exists()
    env_default = {**node.env, "RTNODE_EXPORT__PSEUDONYMISE": "true",
                   "RTNODE_EXPORT__PSEUDONYM_KEY": KEY,
                   "RTNODE_EXPORT__MAPPING_FILE": str(tmp_path / "m.csv")}
    r = subprocess.run([*RTNODE, "export", "--out", str(tmp_path / "d.csv"), "--config",
                        str(node.config)], capture_output=True, text=True, timeout=300,
                       env=env_default)
    assert r.returncode == 0, r.stderr
    assert "PSEUDO1" not in (tmp_path / "d_dvh.csv").read_text()
    assert (tmp_path / "m.csv").exists()
