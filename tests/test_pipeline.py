"""The stage machinery under stress: one gpu slot, a parallel cpu pool, kills, timeouts, memory
back-off, requeue and pause — observed through the index's timestamps, never through timing."""

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

from peers import RTNODE, store_responses, storescu
from test_courses import settled, stage, write_course
from rtnode.phantom import Patient

pytestmark = pytest.mark.network

RULES = """rules:
  - {name: gpu, match: {calling_ae: [GPU*]}, stages: [slow_gpu]}
  - {name: cpu, match: {calling_ae: [CPU*]}, stages: [slow_cpu]}
  - {name: memory, match: {calling_ae: [MEM*]}, stages: [memory_hungry]}
  - {name: hang, match: {calling_ae: [HANG*]}, stages: [hang]}
  - {name: default, stages: [manifest]}
"""


@pytest.fixture
def test_node(node_factory, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES)

    def make(seconds: float = 2.0, **sections):
        return node_factory(env={"RTNODE_TEST_STAGE_SECONDS": str(seconds)},
                            stages={"plugins": ["stage_plugins"]},
                            courses={"rules_dir": str(rules)}, **sections)
    return make


def send_ct_courses(node, tmp_path: Path, calling: str, n: int) -> None:
    for i in range(n):
        files = write_course(tmp_path / f"{calling}{i}", Patient(patient_id=f"{calling}{i}"),
                             with_rt=False)
        r = storescu(node.port, files["CT"], calling=calling)
        assert store_responses(r.stdout) == ["Success"] * len(files["CT"])


def interval(s: dict) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(s["started_at"]), dt.datetime.fromisoformat(s["finished_at"])


def overlaps(a: dict, b: dict) -> bool:
    (a0, a1), (b0, b1) = interval(a), interval(b)
    return a0 < b1 and b0 < a1


def test_gpu_queue_runs_one_at_a_time_while_cpu_pool_runs_courses_in_parallel(test_node,
                                                                              tmp_path):
    node = test_node(seconds=2.0, queue={"gpu_workers": 1}, workers={"cpu_workers": 2})
    send_ct_courses(node, tmp_path, "GPUSCU", 3)
    send_ct_courses(node, tmp_path, "CPUSCU", 2)
    courses = node.wait_courses(lambda cs: settled(cs, 5), timeout=120)
    gpu = [stage(c, "slow_gpu") for c in courses if c["rule"] == "gpu"]
    cpu = [stage(c, "slow_cpu") for c in courses if c["rule"] == "cpu"]
    assert len(gpu) == 3 and len(cpu) == 2
    assert all(s["state"] == "done" and s["queue"] == "gpu" for s in gpu)
    assert all(s["state"] == "done" and s["queue"] == "cpu" for s in cpu)
    for i, a in enumerate(gpu):
        for b in gpu[i + 1:]:
            assert not overlaps(a, b), "two gpu tasks ran at once"
    assert overlaps(cpu[0], cpu[1]), "the cpu pool did not run two courses at once"


def test_without_gpu_workers_gpu_stages_join_the_cpu_pool(test_node, tmp_path):
    node = test_node(seconds=0.2)
    send_ct_courses(node, tmp_path, "GPUSCU", 1)
    c = node.wait_courses(settled)[0]
    assert stage(c, "slow_gpu")["queue"] == "cpu" and stage(c, "slow_gpu")["state"] == "done"


def test_kill9_node_while_stages_run_then_restart_finishes_every_course(test_node, tmp_path):
    node = test_node(seconds=4.0)
    send_ct_courses(node, tmp_path, "CPUSCU", 3)
    node.wait_courses(lambda cs: any(stage(c, "slow_cpu")["state"] == "running"
                                     for c in cs if c["stages"]), what="a running stage")
    assert len(node.processes()) >= 4  # serve, consumer, its 2 workers (and Huey's scheduler)
    node.kill9()
    assert node.wait_no_processes() == [], "workers outlived the killed node"
    node.start()
    courses = node.wait_courses(lambda cs: settled(cs, 3), timeout=120)
    for c in courses:
        s = stage(c, "slow_cpu")
        assert s["state"] == "done", s
    assert any(stage(c, "slow_cpu")["attempts"] >= 2 for c in courses)
    assert "requeued" in node.log


def test_a_dead_consumer_is_restarted_and_its_task_retried(test_node, tmp_path):
    node = test_node(seconds=12.0, workers={"cpu_workers": 1})
    send_ct_courses(node, tmp_path, "CPUSCU", 1)
    node.wait_courses(lambda cs: cs and cs[0]["stages"] and
                      stage(cs[0], "slow_cpu")["state"] == "running", what="running")
    consumer = next(w["pid"] for w in node.cli_json("status")["workers"] if w["queue"] == "cpu")
    os.kill(consumer, signal.SIGKILL)
    c = node.wait_courses(settled, timeout=120)[0]
    s = stage(c, "slow_cpu")
    assert s["state"] == "done" and s["attempts"] == 2
    assert f"cpu worker process {consumer} exited" in node.log
    alive = node.cli_json("status")["workers"]
    assert alive and all(w["alive"] for w in alive) and alive[0]["pid"] != consumer


def test_memory_error_retries_with_a_smaller_footprint(test_node, tmp_path):
    node = test_node()
    send_ct_courses(node, tmp_path, "MEMSCU", 1)
    c = node.wait_courses(settled)[0]
    s = stage(c, "memory_hungry")
    assert s["state"] == "done" and s["footprint"] == "small"
    assert (Path(c["output_dir"]) / "small.txt").exists()
    assert "MemoryError" in (Path(c["output_dir"]) / "logs" / "memory_hungry.log").read_text()


def test_timeout_fails_with_reason_and_requeue_failed_runs_it_again(test_node, tmp_path):
    node = test_node()
    send_ct_courses(node, tmp_path, "HANGSCU", 1)
    c = node.wait_courses(settled)[0]
    s = stage(c, "hang")
    assert c["state"] == "failed"
    assert s["state"] == "failed" and s["reason"] == "timed out after 2 s"
    r = node.cli("requeue", "--failed")
    assert r.returncode == 0 and "requeued 1 failed stage run(s)" in r.stdout
    c = node.wait_courses(lambda cs: settled(cs) and stage(cs[0], "hang")["attempts"] == 2)[0]
    assert stage(c, "hang")["state"] == "failed"


def test_requeue_reruns_a_stage_and_pause_holds_work(test_node, tmp_path):
    node = test_node(seconds=0.2)
    send_ct_courses(node, tmp_path, "CPUSCU", 1)
    c = node.wait_courses(settled)[0]
    first = stage(c, "slow_cpu")
    assert first["attempts"] == 1

    assert node.cli("queue", "pause", "cpu").returncode == 0
    assert node.cli_json("status")["queues"]["cpu"]["paused"] is True
    r = node.cli("requeue", str(c["id"]), "--stage", "slow_cpu")
    assert r.returncode == 0 and "1 stage run(s) back to pending" in r.stdout
    time.sleep(3)  # several scheduler ticks while paused
    held = node.courses()[0]
    assert held["state"] == "running" and stage(held, "slow_cpu")["state"] == "pending"
    assert node.cli("queue", "resume").returncode == 0
    c = node.wait_courses(settled)[0]
    again = stage(c, "slow_cpu")
    assert again["state"] == "done" and again["attempts"] == 2
    assert again["finished_at"] > first["finished_at"]

    r = node.cli("requeue", str(c["id"]), "--stage", "nonsense")
    assert r.returncode == 2 and "has stages slow_cpu" in r.stderr


def test_cancel_stops_dispatch(test_node, tmp_path):
    node = test_node(seconds=0.2)
    assert node.cli("queue", "pause").returncode == 0
    send_ct_courses(node, tmp_path, "CPUSCU", 1)
    c = node.wait_courses(lambda cs: cs and cs[0]["state"] == "running")[0]
    r = node.cli("cancel", str(c["id"]))
    assert r.returncode == 0 and "1 waiting stage run(s) dropped" in r.stdout
    assert node.cli("queue", "resume").returncode == 0
    time.sleep(2)
    c = node.courses()[0]
    assert c["state"] == "cancelled" and stage(c, "slow_cpu")["state"] == "cancelled"
    shown = node.cli_json("course", "show", str(c["id"]))
    assert shown["state"] == "cancelled" and len(shown["objects"]) == 30
    assert json.loads(json.dumps(shown))["revisions"][0]["members"] == 30


def test_fan_out_parts_run_in_parallel_and_a_stuck_part_fails_alone(test_node, tmp_path):
    rules = tmp_path / "rules"  # made by the test_node fixture
    (rules / "test.yaml").write_text(RULES.replace("  - {name: default",
                                                   "  - {name: fan, match: {calling_ae: [FAN*]},"
                                                   " stages: [fan, manifest]}\n"
                                                   "  - {name: default"))
    node = test_node(seconds=1.0, workers={"cpu_workers": 2})
    send_ct_courses(node, tmp_path, "FANSCU", 1)
    c = node.wait_courses(settled, timeout=120)[0]
    runs = {s["part"]: s for s in c["stages"] if s["stage"] == "fan"}
    assert set(runs) == {"", "roi1", "roi2", "roi3", "stuck"}
    assert runs["stuck"]["state"] == "failed" and runs["stuck"]["reason"] == "timed out after 4 s"
    assert all(runs[p]["state"] == "done" for p in ("roi1", "roi2", "roi3"))
    parent = runs[""]
    assert parent["state"] == "done" and parent["reason"] == "1 of 4 part(s) failed"
    assert stage(c, "manifest")["state"] == "done"  # the rest of the course completed
    assert c["state"] == "failed"  # but the course says something failed
    assert (Path(c["output_dir"]) / "merged.txt").read_text() == "roi1,roi2,roi3"
    parts = [runs[p] for p in ("roi1", "roi2", "roi3", "stuck")]
    assert any(overlaps(a, b) for i, a in enumerate(parts) for b in parts[i + 1:]), \
        "parts of one course did not run in parallel"
    # the merge came after every part had finished
    assert parent["finished_at"] >= max(p["finished_at"] for p in parts)


def test_redis_backend_lets_a_worker_on_another_host_take_tasks(node_factory, tmp_path):
    """Scale-out: Huey on Redis; a second `rtnode worker` (standing in for another host that
    shares storage/) takes part of one course's fan-out."""
    from peers import free_port, require

    port = free_port()
    redis = subprocess.Popen([require("redis-server"), "--port", str(port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - {name: fan, stages: [fan]}\n")
    try:
        node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "1.5"},
                            stages={"plugins": ["stage_plugins"],
                                    "timeouts": {"fan": 6}},
                            queue={"backend": "redis", "redis_url": f"redis://127.0.0.1:{port}/0"},
                            workers={"cpu_workers": 1}, courses={"rules_dir": str(rules)})
        extra = subprocess.Popen([*RTNODE, "worker", "--queue", "cpu", "--workers", "1",
                                  "--config", str(node.config)], env=node.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            send_ct_courses(node, tmp_path, "FANSCU", 1)
            c = node.wait_courses(settled, timeout=120)[0]
            db = sqlite3.connect(node.storage / "index.sqlite")
            pids = {pid for (pid,) in db.execute(
                "SELECT worker_pid FROM stage_runs WHERE part IN ('roi1','roi2','roi3')")}
            db.close()
            assert len(pids) == 2, "both the node's worker and the extra worker took parts"
            assert all(s["state"] == "done" for s in c["stages"] if s["part"] != "stuck")
        finally:
            extra.send_signal(signal.SIGINT)
            extra.wait(30)
    finally:
        redis.terminate()
        redis.wait(10)
