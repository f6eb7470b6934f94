"""Keeping the machine busy: wake-up dispatch, fan-out sizing, fair share between senders and the
incremental detector — in a real node where the behaviour is end to end, in-process where a
rule is a pure function. Outcomes and orderings only, never timings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from peers import store_responses, storescu
from test_courses import settled, stage, write_course
from rtnode.config import Config
from rtnode.courses.detector import Detector
from rtnode.courses.rules import load_rules
from rtnode.phantom import CTGeometry, Patient
from rtnode.queue.scheduler import fair_share
from rtnode.queue.wake import ARRIVAL, RUN_FINISHED, WakeListener, WakeSender
from rtnode.radiomics.course import group_rois, part_name, part_rois
from rtnode.stages.base import load_stages
from rtnode.store.archive import Archive
from rtnode.cohorts.importer import import_path

ONE_SLICE = CTGeometry(rows=16, columns=16, pixel_spacing=(6.0, 6.0), slices=1,
                       slice_spacing=3.0)


def ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


# -- wake-up ---------------------------------------------------------------------------------

def test_a_worker_datagram_wakes_the_listener_and_a_burst_is_drained_at_once(tmp_path):
    listener = WakeListener(tmp_path / "storage")
    sender = WakeSender(tmp_path / "storage")
    try:
        assert listener.event_driven
        assert listener.wait(0.05) == set()  # nothing sent: the timeout ends the wait
        sent = [sender.notify(RUN_FINISHED) for _ in range(50)]
        assert sent[0]  # once the socket's queue is full the rest are dropped: it is awake
        listener.notify(ARRIVAL)
        assert listener.wait(30) == {RUN_FINISHED, ARRIVAL}
        assert listener.wait(0.05) == set()  # all 51 were one wake-up
        other = WakeSender(tmp_path / "elsewhere")  # another node's storage: nobody listens
        assert other.notify() is False
    finally:
        sender.close()
        listener.close()
    assert WakeSender(tmp_path / "storage").notify() is False  # the node stopped: no error


@pytest.mark.network
def test_a_multi_stage_course_completes_with_polling_practically_off(node_factory, tmp_path):
    """poll_seconds one hour: every hand-over (gpu stage -> cpu stage -> manifest, and the
    course becoming ready after its quiet period) must come from a wake-up, not from a poll."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "rules:\n  - {name: chain, stages: [slow_gpu, slow_cpu, manifest, fan]}\n")
    node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "0.3"},
                        stages={"plugins": ["stage_plugins"], "timeouts": {"fan": 3}},
                        courses={"rules_dir": str(rules), "poll_seconds": 3600.0,
                                 "quiet_seconds": 1.0})
    files = write_course(tmp_path / "c", Patient(patient_id="WAKE1"), with_rt=False)
    assert store_responses(storescu(node.port, files["CT"]).stdout) == ["Success"] * 30
    c = node.wait_courses(settled, timeout=120, what="the course settled without polling")[0]
    gpu, cpu, manifest = (stage(c, n) for n in ("slow_gpu", "slow_cpu", "manifest"))
    assert gpu["state"] == cpu["state"] == manifest["state"] == "done"
    assert ts(cpu["started_at"]) >= ts(gpu["finished_at"])  # still in dependency order
    fan = {s["part"]: s for s in c["stages"] if s["stage"] == "fan"}
    assert fan[""]["state"] == "done" and fan["stuck"]["state"] == "failed"  # split -> merge
    assert "woken by workers" in node.log and "pipeline tick failed" not in node.log


# -- fan-out sizing --------------------------------------------------------------------------

def test_rois_are_grouped_into_about_two_parts_per_worker_largest_first():
    sizes = {f"manual:OAR{i:02d}": float(100 + 10 * i) for i in range(30)}
    sizes["manual:Liver"] = 5000.0
    groups = group_rois(sizes, 2 * 2)  # 2 workers x parts_per_worker 2
    assert len(groups) == 4
    assert sorted(r for g in groups for r in g) == sorted(sizes)  # every ROI exactly once
    loads = [sum(sizes[r] for r in g) for g in groups]
    assert loads == sorted(loads, reverse=True)  # queued largest first
    assert groups[0] == ["manual:Liver"]  # the big organ alone outweighs a share of the rest
    rest = loads[1:]
    assert max(rest) - min(rest) <= max(sizes[r] for g in groups[1:] for r in g)  # balanced
    # fewer ROIs than parts: one each; names survive any character, one ROI stays readable
    assert group_rois({"manual:A": 1.0, "auto:B": 2.0}, 8) == [["auto:B"], ["manual:A"]]
    odd = ["manual:GTV [boost], \"2\"", "auto:Lung|L"]
    assert part_rois(part_name(odd)) == odd and part_name(odd[:1]) == odd[0]
    assert part_rois("manual:GTV") == ["manual:GTV"]


# -- fair share ------------------------------------------------------------------------------

def _run(i: int, ae: str, size: int, band: int = 1) -> dict:
    return {"id": i, "calling_ae": ae, "size": size, "band": band}


def test_fair_share_alternates_senders_and_keeps_band_and_size_order_within_one():
    # already in the SQL order: band, then size (180 one-slice junk courses sort first)
    ready = [_run(i, "JUNK", 1) for i in range(180)] + [_run(999, "TPS", 33)]
    picked = fair_share(ready, {"JUNK": 2}, 2)
    assert [r["id"] for r in picked] == [999, 0]  # the real course is not behind 180 junk ones
    picked = fair_share(ready, {}, 4)
    assert [r["calling_ae"] for r in picked] == ["JUNK", "TPS", "JUNK", "JUNK"]
    assert [r["id"] for r in picked if r["calling_ae"] == "JUNK"] == [0, 1, 2]
    # a higher band (clinical, or aged) goes first whoever sent it
    cohort = [_run(1, "PACS", 5, band=0), _run(2, "TPS", 50, band=1)]
    assert [r["id"] for r in fair_share(cohort, {"TPS": 10}, 1)] == [2]
    assert fair_share([], {}, 3) == [] and fair_share(ready, {}, 0) == []


@pytest.mark.network
def test_a_flood_of_one_slice_courses_does_not_starve_a_real_course(node_factory, tmp_path):
    """Issue 13 item 11: 16 one-slice courses from one sender, then a 30-slice course from
    another, one worker. Smaller-first alone would run the real course last."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - {name: work, stages: [slow_cpu]}\n")
    node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "1.0"},
                        stages={"plugins": ["stage_plugins"]},
                        courses={"rules_dir": str(rules), "quiet_seconds": 1.0},
                        workers={"cpu_workers": 1})
    junk = []
    for i in range(16):
        junk += write_course(tmp_path / f"j{i}", Patient(patient_id=f"JUNK{i:02d}"),
                             with_rt=False, geometry=ONE_SLICE)["CT"]
    real = write_course(tmp_path / "real", Patient(patient_id="REAL1"), with_rt=False)["CT"]
    assert store_responses(storescu(node.port, junk, calling="JUNKSCU").stdout) == \
        ["Success"] * 16
    assert store_responses(storescu(node.port, real, calling="TPSSCU").stdout) == \
        ["Success"] * 30
    courses = node.wait_courses(lambda cs: settled(cs, 17), timeout=240)
    started = {c["patient_id"]: ts(stage(c, "slow_cpu")["started_at"]) for c in courses}
    assert all(stage(c, "slow_cpu")["state"] == "done" for c in courses)
    after_real = [p for p, t in started.items() if p != "REAL1" and t > started["REAL1"]]
    assert len(after_real) >= 8, f"the real course started after {16 - len(after_real)} of 16"


# -- incremental detector --------------------------------------------------------------------

class CountingDetector(Detector):
    """The node's detector, counting how often it regroups a patient from the index."""

    regrouped: list[str]

    def _members(self, patient_id: str) -> list:
        self.regrouped.append(patient_id)
        return super()._members(patient_id)


def test_the_detector_regroups_only_touched_patients_and_rewrites_nothing_unchanged(tmp_path):
    config = Config.model_validate({"storage": {"root": str(tmp_path / "storage")},
                                    "courses": {"quiet_seconds": 3600.0}})
    registry = load_stages([])
    rules = load_rules(Path(__file__).parents[1] / "rules", registry)
    archive = Archive.from_config(config)
    a = write_course(tmp_path / "a", Patient(patient_id="PA"))
    b = write_course(tmp_path / "b", Patient(patient_id="PB"))
    for files in (a, b):
        folder = files["CT"][0].parent
        assert import_path(archive, folder)["received"] > 0
    det = CountingDetector(config, archive.index, rules, registry)
    det.regrouped = []
    det.tick()
    assert sorted(det.regrouped) == ["PA", "PB"]
    rows = {r["patient_id"]: dict(r) for r in archive.index.query("SELECT * FROM courses")}
    assert {p: r["state"] for p, r in rows.items()} == {"PA": "receiving", "PB": "receiving"}
    changes = archive.index.query("SELECT COUNT(*) FROM events")[0][0]

    det.regrouped = []
    for _ in range(3):  # nothing arrived: no regrouping, no course row written, no cursor write
        det.tick()
    assert det.regrouped == []
    again = {r["patient_id"]: dict(r) for r in archive.index.query("SELECT * FROM courses")}
    assert again == rows
    assert archive.index.query("SELECT COUNT(*) FROM events")[0][0] == changes

    # a new object for PB only: PB is regrouped, PA is not
    extra = write_course(tmp_path / "b2", Patient(patient_id="PB"), with_rt=False)
    assert import_path(archive, extra["CT"][0].parent)["received"] == 30
    det.tick()
    assert det.regrouped == ["PB"]
    now = {r["patient_id"]: dict(r) for r in archive.index.query("SELECT * FROM courses")}
    assert now["PA"] == rows["PA"]
    # the quiet period running out is found without an arrival, and only PA's courses move
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    det.regrouped = []
    created = det.tick(now=later)
    assert sorted(set(det.regrouped)) == ["PA", "PB"] and len(created) >= 2
    assert det.seconds_to_next_due(later) is None  # nothing left waiting
    archive.close()


# -- queue-ahead -----------------------------------------------------------------------------

def test_each_worker_gets_exactly_one_run_queued_ahead(tmp_path):
    """Four ready runs, one cpu worker: two go to Huey (one to run, one waiting behind it),
    however often the scheduler ticks; the rest wait as pending in the index."""
    from rtnode.queue.hueys import make_huey
    from rtnode.queue.scheduler import Scheduler

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yaml").write_text("rules:\n  - {name: four, stages: [manifest, dvh, "
                                      "radiomics, robustness]}\n")
    config = Config.model_validate({"storage": {"root": str(tmp_path / "storage")},
                                    "courses": {"quiet_seconds": 0.0,
                                                "rules_dir": str(rules_dir)}})
    registry = load_stages([])
    archive = Archive.from_config(config)
    files = write_course(tmp_path / "a", Patient(patient_id="AHEAD"))
    assert import_path(archive, files["CT"][0].parent)["received"] > 0
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert Detector(config, archive.index, load_rules(rules_dir, registry), registry).tick(later)
    from rtnode.queue.registry import Registry, worker_id

    Registry(archive.index, 30.0).register(worker_id("here", 1, "cpu"), host="here", pid=1,
                                           queue="cpu", slots=1)  # capacity: one live slot
    huey = make_huey(config, "cpu")
    scheduler = Scheduler(config, archive.index, {"cpu": huey}, {"cpu": 1})
    assert scheduler.tick() == 2
    assert scheduler.tick() == 0 and scheduler.tick() == 0
    states = [r[0] for r in archive.index.query("SELECT state FROM stage_runs ORDER BY id")]
    assert states.count("queued") == 2 and states.count("pending") == 2
    assert huey.pending_count() == 2
    archive.close()


def test_workers_on_other_hosts_wake_the_node_through_redis(tmp_path):
    """queue.backend redis: a worker publishes on the queue's Redis, the node's forwarding
    thread turns it into a wake-up (a real redis-server on a free loopback port)."""
    import subprocess
    import threading

    from peers import free_port, require
    from rtnode.queue.wake import RedisWake

    port = free_port()
    redis = subprocess.Popen([require("redis-server"), "--port", str(port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    listener = WakeListener(tmp_path / "storage")
    stop = threading.Event()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        node_side = RedisWake(url, "rtnode")
        forward = threading.Thread(target=node_side.forward, args=(listener, stop), daemon=True)
        forward.start()
        worker_side = RedisWake(url, "rtnode")
        news: set[str] = set()
        for _ in range(60):  # until the subscription is in place
            worker_side.notify(RUN_FINISHED)
            news = listener.wait(0.5)
            if news:
                break
        assert news == {RUN_FINISHED}
        assert RedisWake(f"redis://127.0.0.1:{free_port()}/0", "rtnode").notify() is False
    finally:
        stop.set()
        listener.close()
        redis.terminate()
        redis.wait(10)


def test_every_watchdog_gives_a_radiomics_part_its_part_timeout():
    """The serving node's watchdog and each worker host's heartbeat judge a part by the same
    limit: the stage's per-ROI timeout scaled to the part, not the per-ROI timeout alone (which
    killed a healthy three-ROI part after a third of its time)."""
    from rtnode.queue.registry import run_timeout

    load_stages(["rtnode.stages.radiomics"])
    config = Config.model_validate({"stages": {"timeouts": {"radiomics": 10}}})
    one = part_name(["manual:Huge"])
    three = part_name(["manual:GTV", "manual:Lung_L", "manual:Lung_R"])
    assert run_timeout({"stage": "radiomics", "part": ""}, config) == 10
    assert run_timeout({"stage": "radiomics", "part": one}, config) == 30
    assert run_timeout({"stage": "radiomics", "part": three}, config) == 70
    assert run_timeout({"stage": "no-such-stage", "part": ""}, config) == \
        config.stages.default_timeout
