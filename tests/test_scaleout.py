"""Scale-out with real peers: Redis queues, a PostgreSQL index, and `rtnode worker` processes
standing in for other hosts (RTNODE_HOST_ID) — capacity from registered slots, a worker killed
mid-task, the broker killed between stages. Judged from the index's timestamps and states."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from peers import RTNODE, free_port, require, store_responses, storescu
from postgres import postgres  # noqa: F401  (fixture)
from test_courses import settled, stage, write_course
from rtnode.phantom import Patient

pytestmark = pytest.mark.network
# Peers (redis, postgres) are requested before node_factory, so the node stops before them.

REMOTE = "remote-host-1"
#: fast registry for tests: beat every second, silent for 6 s = dead
FAST_REGISTRY = {"heartbeat_seconds": 1.0, "heartbeat_timeout": 6.0}


class Redis:
    """redis-server on a free loopback port, no persistence (a restart loses every message)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        self.proc = subprocess.Popen([require("redis-server"), "--port", str(self.port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ping = subprocess.run([require("redis-cli"), "-p", str(self.port), "ping"],
                                  capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                return self
            time.sleep(0.1)
        raise RuntimeError("redis-server did not come up")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis():
    server = Redis().start()
    yield server
    server.stop()


def rules_for(tmp_path: Path, text: str) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(text)
    return rules


def start_worker(node, host: str, slots: int = 1) -> subprocess.Popen:
    """`rtnode worker` as another host would run it: same config, its own host id."""
    log = open(node.config.parent / f"worker-{host}.log", "ab")
    return subprocess.Popen([*RTNODE, "worker", "--queue", "cpu", "--workers", str(slots),
                             "--config", str(node.config)],
                            env={**node.env, "RTNODE_HOST_ID": host}, stdout=log,
                            stderr=subprocess.STDOUT)


def wait_for(what: str, predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def live_slots(node) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in node.cli_json("workers"):
        if w["live"]:
            out[w["host"]] = out.get(w["host"], 0) + w["slots"]
    return out


def runs(node) -> list[dict]:
    db = sqlite3.connect(node.storage / "index.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM stage_runs ORDER BY id")]
    finally:
        db.close()


def send(node, tmp_path: Path, patient_id: str, calling: str = "SCALESCU",
         with_rt: bool = False) -> None:
    files = write_course(tmp_path / patient_id, Patient(patient_id=patient_id), with_rt=with_rt)
    everything = [f for group in files.values() for f in group]
    r = storescu(node.port, everything, calling=calling)
    assert store_responses(r.stdout) == ["Success"] * len(everything), r.stdout


def interval(run: dict) -> tuple[dt.datetime, dt.datetime]:
    return (dt.datetime.fromisoformat(run["started_at"]),
            dt.datetime.fromisoformat(run["finished_at"]))


def most_at_once(parts: list[dict]) -> int:
    """The largest number of parts whose [started, finished] intervals overlap at one moment."""
    edges = sorted([(interval(p)[0], 1) for p in parts] + [(interval(p)[1], -1) for p in parts],
                   key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- the whole flow on PostgreSQL + Redis ------------------------------------------------------

def test_whole_course_flow_on_a_postgresql_index_with_redis_queues(redis, postgres,  # noqa: F811
                                                                    node_factory, tmp_path):
    node = node_factory(index={"url": postgres.url},
                        queue={"backend": "redis", "redis_url": redis.url},
                        workers={"cpu_workers": 2, **FAST_REGISTRY})
    send(node, tmp_path, "PGFLOW1", calling="TPS1", with_rt=True)
    c = node.wait_courses(settled, timeout=300, what="the course on PostgreSQL")[0]
    assert c["state"] == "done", json.dumps(c["stages"], indent=1)
    assert c["complete"] and c["instance_count"] == 33
    for name in ("manifest", "segment", "rtstruct", "dvh", "radiomics", "qc"):
        assert stage(c, name)["state"] == "done", stage(c, name)
    out = Path(c["output_dir"])
    manifest = json.loads((out / "course.json").read_text())
    assert manifest["counts"] == {"CT": 30, "RTSTRUCT": 1, "RTPLAN": 1, "RTDOSE": 1}
    for name in ("dvh_metrics.csv", "radiomics.csv", "qc.json", "rtstruct_auto.dcm"):
        assert (out / name).exists(), name
    # the index really is the server: no SQLite file, and the server holds the rows
    assert not (node.storage / "index.sqlite").exists()
    import psycopg

    with psycopg.connect(postgres.url) as db:
        # what was sent, and the auto RTSTRUCT filed as the course's derived instance
        assert db.execute("SELECT COUNT(*) FROM instances WHERE origin != 'derived'"
                          ).fetchone()[0] == 33
        assert db.execute("SELECT COUNT(*) FROM instances WHERE origin = 'derived'"
                          ).fetchone()[0] == 1
        done = db.execute("SELECT COUNT(*) FROM stage_runs WHERE state='done'"
                          " AND worker_id != ''").fetchone()[0]
        assert done >= 6
    status = node.cli_json("status")
    assert status["counts"]["instances"] == 33
    assert {w["queue"] for w in status["registry"] if w["live"]} == {"cpu"}
    assert sum(w["slots"] for w in status["registry"] if w["live"]) == 2


# -- capacity is the sum of registered slots ---------------------------------------------------

def test_a_second_host_with_one_slot_runs_a_second_part_at_once(redis, node_factory, tmp_path):
    rules = rules_for(tmp_path, "rules:\n  - {name: fan, stages: [fan6]}\n")
    node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "2"},
                        stages={"plugins": ["scaleout_plugins"]},
                        queue={"backend": "redis", "redis_url": redis.url},
                        workers={"cpu_workers": 1, **FAST_REGISTRY},
                        courses={"rules_dir": str(rules)})
    extra = start_worker(node, REMOTE)
    try:
        slots = wait_for("both hosts registered", lambda: (
            s if len(s := live_slots(node)) == 2 else None))
        assert slots[REMOTE] == 1 and sum(slots.values()) == 2
        send(node, tmp_path, "FAN6")
        c = node.wait_courses(settled, timeout=180)[0]
        assert c["state"] == "done"
        parts = [r for r in runs(node) if r["stage"] == "fan6" and r["part"]]
        assert sorted(p["part"] for p in parts) == [f"p{i}" for i in range(1, 7)]
        assert all(p["state"] == "done" for p in parts)
        assert {p["worker_host"] for p in parts} == {REMOTE, node_host(node)}, \
            "both hosts took parts"
        # two slots registered → two parts at once, never more
        assert most_at_once(parts) == 2, [(p["part"], p["started_at"], p["finished_at"])
                                          for p in parts]
        listed = node.cli("workers")
        assert listed.returncode == 0 and REMOTE in listed.stdout
    finally:
        stop(extra)


def node_host(node) -> str:
    return next(w["host"] for w in node.cli_json("workers") if w["host"] != REMOTE)


# -- a host dies mid-task ----------------------------------------------------------------------

def test_kill9_of_a_remote_worker_mid_task_retries_the_run_and_blocks_nothing(redis,
                                                                              node_factory,
                                                                              tmp_path):
    rules = rules_for(tmp_path, "rules:\n  - {name: fan, stages: [fan6]}\n")
    node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "3"},
                        stages={"plugins": ["scaleout_plugins"]},
                        queue={"backend": "redis", "redis_url": redis.url},
                        workers={"cpu_workers": 1, **FAST_REGISTRY},
                        courses={"rules_dir": str(rules)})
    extra = start_worker(node, REMOTE)
    try:
        wait_for("both hosts registered", lambda: len(live_slots(node)) == 2)
        send(node, tmp_path, "KILLED1")
        victim = wait_for("a part running on the remote host", lambda: next(
            (r for r in runs(node) if r["state"] == "running" and r["part"]
             and r["worker_host"] == REMOTE),
            None))
        os.kill(extra.pid, signal.SIGKILL)  # the consumer; its task process dies with it
        extra.wait(10)
        c = node.wait_courses(settled, timeout=180, what="the course after the kill")[0]
        assert c["state"] == "done"
        retried = next(r for r in runs(node) if r["id"] == victim["id"])
        assert retried["state"] == "done" and retried["attempts"] == 2
        assert retried["worker_host"] != REMOTE  # finished on the live host
        # the dead worker is seen as silent, and no longer counted
        dead = [w for w in node.cli_json("workers") if w["host"] == REMOTE]
        assert dead == [] or not any(w["live"] for w in dead)
        # a later course is not blocked by the dead host
        send(node, tmp_path, "LATER2")
        courses = node.wait_courses(lambda cs: settled(cs, 2), timeout=180,
                                    what="the later course")
        assert all(x["state"] == "done" for x in courses)
    finally:
        stop(extra)


# -- the broker dies between stages ------------------------------------------------------------

def test_redis_killed_and_restarted_between_stages_the_course_still_ends_done(redis,
                                                                              node_factory,
                                                                              tmp_path):
    rules = rules_for(tmp_path, "rules:\n  - {name: steps, stages: [step1, step2]}\n")
    node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "3"},
                        stages={"plugins": ["scaleout_plugins"]},
                        queue={"backend": "redis", "redis_url": redis.url, "claim_timeout": 8},
                        workers={"cpu_workers": 1, **FAST_REGISTRY},
                        courses={"rules_dir": str(rules)})
    send(node, tmp_path, "BROKER1")
    wait_for("step1 running", lambda: any(
        r["stage"] == "step1" and r["state"] == "running" for r in runs(node)))
    redis.kill9()
    # step1 finishes during the outage; step2 cannot be sent and stays pending, not queued
    wait_for("the outage noticed", lambda: "cannot reach the queue broker" in node.log,
             timeout=60)
    step2 = next(r for r in runs(node) if r["stage"] == "step2")
    assert step2["state"] == "pending" and step2["token"] == ""
    # receiving goes on while the broker is down
    send(node, tmp_path, "DURING2")
    redis.start()  # same port, empty: every message it held is gone
    courses = node.wait_courses(lambda cs: settled(cs, 2), timeout=240,
                                what="both courses after the broker came back")
    assert all(c["state"] == "done" for c in courses), courses
    assert "broker is reachable again" in node.log
