"""The ``rtnode`` command: serve the node, and look into it.

Every listing takes ``--json`` and then prints stable keys (documented in the README) for
scripts; without it, a rich table for people. Problems a person must fix end with one line on
standard error and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table  # noqa: F401  (kept for commands that build their own)

from rtnode import __version__
from rtnode.cliconfig import CONFIG_HELP, config_or_exit
from rtnode.config import Config

app = typer.Typer(
    name="rtnode", add_completion=False,
    help="A DICOM node for radiotherapy: receives, files and indexes studies.")
config_app = typer.Typer(no_args_is_help=True, help="Check and show the configuration.")
app.add_typer(config_app, name="config")
course_app = typer.Typer(no_args_is_help=True, help="One course in detail.")
app.add_typer(course_app, name="course")
queue_app = typer.Typer(no_args_is_help=True, help="Hold or release a queue.")
app.add_typer(queue_app, name="queue")

out = Console()
err = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", help=CONFIG_HELP, show_default=False)
JsonOption = typer.Option(False, "--json", help="Print JSON with stable keys (see README).")
PatientOption = typer.Option(None, "--patient-id", help="Only this PatientID.")


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def get_config(path: Optional[Path]) -> Config:
    """The config, with this process's DICOM TLS settings registered for outgoing calls."""
    cfg = config_or_exit(path)
    from rtnode.dicom import tls
    tls.configure(cfg)
    return cfg


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str,
                wrap: tuple[str, ...] = ()) -> None:
    from rtnode.clitable import make_table

    out.print(make_table(rows, columns, title, wrap, width=out.width))


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context,
         version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                      is_eager=True)) -> None:
    if version:
        out.print(f"rtnode {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        out.print(ctx.get_help())
        raise typer.Exit(0)


# -- serve -------------------------------------------------------------------------------------

@app.command()
def serve(
    config: Optional[Path] = ConfigOption,
    port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535,
                                       help="Override dicom.port."),
    bind: Optional[str] = typer.Option(None, "--bind", help="Override dicom.bind."),
    ae_title: Optional[str] = typer.Option(None, "--ae-title", help="Override dicom.ae_title."),
    cpu_workers: Optional[int] = typer.Option(None, "--cpu-workers", min=1,
                                              help="Override workers.cpu_workers."),
) -> None:
    """Run the node: DICOM listener, course detector, scheduler and queue workers."""
    from pydantic import ValidationError

    from rtnode.courses.rules import RulesError
    from rtnode.logs import setup_logging
    from rtnode.node import ListenerError, Node, NodeAlreadyRunning
    from rtnode.web.server import HttpStartError

    cfg = get_config(config)
    try:
        if port is not None:
            cfg.dicom.port = port
        if bind is not None:
            cfg.dicom.bind = bind
        if ae_title is not None:
            cfg.dicom.ae_title = ae_title
        if cpu_workers is not None:
            cfg.workers.cpu_workers = cpu_workers
    except ValidationError as exc:
        raise fail(f"bad command-line override: {exc.errors()[0]['msg']}") from None
    setup_logging(cfg.logging.level, cfg.log_file, cfg.logging)
    try:
        code = Node(cfg).run()
    except RulesError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]rules error:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (NodeAlreadyRunning, ListenerError) as exc:
        raise fail(str(exc)) from None
    except HttpStartError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot start the node under {cfg.storage_root}: "
                   f"{exc.strerror or exc}") from None
    raise typer.Exit(code)


# -- echo --------------------------------------------------------------------------------------

@app.command()
def echo(
    peer: str = typer.Argument(..., help="AE@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242) or a "
                               "remote/destination name from the config"),
    config: Optional[Path] = ConfigOption,
    calling_ae: Optional[str] = typer.Option(None, "--calling-ae",
                                             help="Our AE title for this call (default dicom.ae_title)."),
    timeout: float = typer.Option(10.0, help="Seconds before giving up."),
) -> None:
    """Send a C-ECHO and say whether the peer answered (AE@HOST:PORT, or a remote's or
    destination's name from the config)."""
    from rtnode.dicom.scu import AddressError, Peer, echo as c_echo, parse_peer

    cfg = get_config(config)
    named = {**cfg.destinations, **cfg.remotes}
    if "@" not in peer and peer in named:
        target = Peer(named[peer].ae_title, named[peer].host, named[peer].port)
    else:
        try:
            target = parse_peer(peer)
        except AddressError as exc:
            if "@" not in peer:
                raise fail(f"{peer!r} is neither AE@HOST:PORT nor a remote or destination in "
                           f"the config ({', '.join(sorted(named)) or 'none configured'})"
                           ) from None
            raise fail(str(exc)) from None
    calling = calling_ae or cfg.dicom.ae_title
    result = c_echo(target, calling_ae=calling, timeout=timeout)
    if not result.ok:
        raise fail(result.detail, 1)
    out.print(f"[green]ok[/] {result.detail}")


# -- status and listings -----------------------------------------------------------------------

# The views behind every --json listing live in rtnode/views.py, shared with the REST API.
from rtnode.views import ViewError, course_json, node_status, registered_workers  # noqa: E402
from rtnode.views import open_index as _open_index  # noqa: E402


@app.command()
def status(config: Optional[Path] = ConfigOption, as_json: bool = JsonOption) -> None:
    """Is the node up; what it holds; when it last received; how much disk is left."""
    s = node_status(get_config(config))
    if as_json:
        print_json(s)
        return
    n = s["node"]
    state = (f"[green]up[/] (pid {n['pid']}, {n['ae_title']} on port {n['port']}, "
             f"since {n['started_at']})" if n["up"] else "[red]down[/]")
    out.print(f"node:          {state}")
    if s.get("config") is None:
        out.print("config:        none found (no --config, $RTNODE_CONFIG, ./config.yaml or "
                  "/etc/rtnode/config.yaml): running on the embedded defaults", highlight=False)
    else:
        out.print(f"config:        {s['config']}", highlight=False)
    c = s["counts"]
    out.print(f"holds:         {c['patients']} patients, {c['studies']} studies, "
              f"{c['series']} series, {c['instances']} instances"
              + (f" (+ {c['derived']} made by rtnode)" if c.get("derived") else ""))
    e = s["events"]
    out.print(f"events:        {e['received']} received, {e['duplicate']} duplicates, "
              f"{e['replaced']} replaced, {e['rejected']} rejected, "
              f"{e['association_rejected']} associations rejected")
    out.print(f"last received: {s['last_received'] or 'never'}")
    out.print("courses:       " + ", ".join(f"{n} {k}" for k, n in s["courses"].items()))
    for q, d in s["queues"].items():
        out.print(f"{q} queue:     {d['pending']} pending, {d['queued']} queued, "
                  f"{d['running']} running{' (PAUSED)' if d['paused'] else ''}")
    alive = [w for w in s["workers"] if w["alive"]]
    out.print(f"workers:       {len(alive)} of {len(s['workers'])} consumer process(es) alive")
    for w in s["registry"]:
        out.print(f"  {w['queue']} on {w['host']} (pid {w['pid']}): {w['slots']} slot(s), "
                  f"heartbeat {w['age_s']:g} s ago{'' if w['live'] else ' [red](silent)[/]'}")
    st = s["storage"]
    out.print(f"storage:       {st['root']} ({st['free_gb']} GB free, "
              f"refuses below {st['min_free_gb']} GB)")
    from rtnode.clitable import retention_line

    out.print(f"retention:     {retention_line(s['retention'])}", highlight=False)


def _listing(kind: str, cfg: Config, as_json: bool, columns: list[str], **filters) -> None:
    index = _open_index(cfg)
    rows = [] if index is None else getattr(index, kind)(**filters)
    if index is not None:
        index.close()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns, kind)


@app.command()
def studies(config: Optional[Path] = ConfigOption, patient_id: Optional[str] = PatientOption,
            as_json: bool = JsonOption) -> None:
    """List the studies in the index."""
    _listing("studies", get_config(config), as_json,
             ["patient_id", "patient_name", "study_date", "study_uid", "modalities",
              "series_count", "instance_count"], patient_id=patient_id)


@app.command()
def series(config: Optional[Path] = ConfigOption, patient_id: Optional[str] = PatientOption,
           study_uid: Optional[str] = typer.Option(None, "--study-uid", help="Only this study."),
           as_json: bool = JsonOption) -> None:
    """List the series in the index."""
    _listing("series", get_config(config), as_json,
             ["patient_id", "modality", "series_number", "series_description", "series_uid",
              "instance_count", "last_received"], patient_id=patient_id, study_uid=study_uid)


@app.command()
def instances(config: Optional[Path] = ConfigOption, patient_id: Optional[str] = PatientOption,
              study_uid: Optional[str] = typer.Option(None, "--study-uid", help="Only this study."),
              series_uid: Optional[str] = typer.Option(None, "--series-uid",
                                                       help="Only this series."),
              as_json: bool = JsonOption) -> None:
    """List the instances in the index."""
    _listing("instances", get_config(config), as_json,
             ["patient_id", "modality", "instance_number", "sop_instance_uid", "size",
              "received_at", "calling_ae"],
             patient_id=patient_id, study_uid=study_uid, series_uid=series_uid)


@app.command()
def verify(config: Optional[Path] = ConfigOption, as_json: bool = JsonOption,
           repair: bool = typer.Option(False, "--repair", help="Index orphans that pass the "
                                       "receive checks (others go to quarantine/) and drop "
                                       "the rows of missing files."),
           quick: bool = typer.Option(False, "--quick", help="Skip the SHA-256 check.")) -> None:
    """Index against disk: orphan files, missing files, sizes and SHA-256 digests.
    Exit code 1 when they disagree (after --repair: when anything is left)."""
    from rtnode.store.archive import Archive
    from rtnode.store.verify import verify as run_verify

    cfg = get_config(config)
    archive = Archive.from_config(cfg)
    try:
        report = run_verify(archive, hash_files=not quick, repair=repair)
    finally:
        archive.close()
    if as_json:
        print_json(report.to_json_dict())
    else:
        out.print(("[green]ok[/] " if report.ok else "[bold red]problems:[/] ")
                  + report.summary(), highlight=False)
        for name in ("orphans", "missing", "size_mismatch", "digest_mismatch"):
            for rel in getattr(report, name)[:50]:
                out.print(f"  {name}: {rel}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


# -- courses -----------------------------------------------------------------------------------

def _book(cfg: Config):
    from rtnode.courses.book import CourseBook

    index = _open_index(cfg)
    if index is None:
        raise fail(f"no index under {cfg.storage_root}: nothing received yet")
    return CourseBook(index)


def _course_or_fail(book, course_id: int) -> dict[str, Any]:
    from rtnode import views

    try:
        return views.course_or_error(book, course_id)
    except ViewError as exc:
        raise fail(str(exc)) from None


@app.command()
def courses(config: Optional[Path] = ConfigOption,
            state: Optional[str] = typer.Option(None, "--state", help="receiving, waiting, "
                                                "running, done, failed or cancelled."),
            patient_id: Optional[str] = PatientOption, as_json: bool = JsonOption) -> None:
    """List treatment courses and where each stands."""
    cfg = get_config(config)
    book = _book(cfg)
    rows = [course_json(book, r, cfg) for r in book.courses(state=state, patient_id=patient_id)]
    book.index.close()
    if as_json:
        print_json(rows)
        return
    from rtnode.clitable import stage_summary

    for r in rows:
        r["stages_summary"] = stage_summary(r["stages"])
    print_table(rows, ["id", "patient_id", "revision", "state", "tag", "instance_count",
                       "complete", "stages_summary"], "courses")


@course_app.command("show")
def course_show(course_id: int = typer.Argument(..., help="Course id (see rtnode courses)."),
                config: Optional[Path] = ConfigOption, as_json: bool = JsonOption) -> None:
    """Objects, completeness, stage states and output folder of one course."""
    cfg = get_config(config)
    book = _book(cfg)
    row = _course_or_fail(book, course_id)
    data = course_json(book, row, cfg, detail=True)
    book.index.close()
    if as_json:
        print_json(data)
        return
    out.print(f"course {data['id']}  patient {data['patient_id']}  revision {data['revision']}"
              f"  [bold]{data['state']}[/]  ({data['tag']}, rule {data['rule']})")
    out.print(f"complete: {'yes' if data['complete'] else 'no'}"
              + "".join(f"\n  missing: {m}" for m in data["missing"]), highlight=False)
    # the folder on a line of its own, unbroken, so that it can be copied
    out.print(f"outputs:\n{data['output_dir']}", highlight=False, soft_wrap=True)
    if data.get("dose_plan"):
        out.print(f"dose:     {data['dose_plan']}", markup=False)
    print_table(data["stages"], ["stage", "part", "queue", "state", "reason", "attempts",
                                 "finished_at"], "stages", wrap=("reason",))
    counts: dict[str, int] = {}
    for o in data["objects"]:
        counts[o["modality"]] = counts.get(o["modality"], 0) + 1
    out.print("objects:  " + ", ".join(f"{n} {m}" for m, n in sorted(counts.items())))


@app.command()
def requeue(
    course_id: Optional[int] = typer.Argument(None, help="Course id."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Rerun only this stage."),
    from_stage: Optional[str] = typer.Option(None, "--from-stage",
                                             help="Rerun this stage and every later one."),
    failed: bool = typer.Option(False, "--failed", help="Rerun every failed stage run."),
    since: Optional[str] = typer.Option(None, "--since", help="With --failed: only runs that "
                                        "failed at or after this date (YYYY-MM-DD)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Run stages again: one course (all stages, one, or from one on), or every failed run."""
    from rtnode import views

    cfg = get_config(config)
    if stage and from_stage:
        raise fail("--stage and --from-stage exclude each other: --stage X reruns X (and what "
                   "it skipped), --from-stage Y reruns Y and every later stage")
    book = _book(cfg)
    if failed:
        if course_id is not None or stage or from_stage:
            raise fail("--failed takes no course id, --stage or --from-stage")
        try:
            n, n_courses = views.requeue_failed(book, since)
        except ViewError as exc:
            raise fail(str(exc)) from None
        views.wake_node(cfg)
        out.print(f"requeued {n} failed stage run(s) in {n_courses} course(s)")
        _note_if_down(cfg)
        return
    if course_id is None:
        raise fail("give a course id, or --failed")
    try:
        n = views.requeue(book, course_id, stage, from_stage)
    except ViewError as exc:
        raise fail(str(exc)) from None
    book.index.close()
    views.wake_node(cfg)
    out.print(f"course {course_id}: {n} stage run(s) back to pending")
    _note_if_down(cfg)


def _note_if_down(cfg: Config) -> None:
    """Changes to queues and runs are recorded in the index either way; say when nothing
    will act on them until the node starts."""
    from rtnode.node_info import node_is_up, read_node_info

    if not node_is_up(read_node_info(cfg.storage_root)):
        err.print(f"[yellow]note:[/] the node is not running (storage {cfg.storage_root}): "
                  "nothing is dispatched until `rtnode serve` starts", highlight=False,
                  soft_wrap=True)


@app.command()
def cancel(course_id: int = typer.Argument(..., help="Course id."),
           config: Optional[Path] = ConfigOption) -> None:
    """Stop dispatching a course's stages (running ones finish); requeue undoes it."""
    cfg = get_config(config)
    book = _book(cfg)
    _course_or_fail(book, course_id)
    n = book.cancel(course_id)
    out.print(f"course {course_id} cancelled ({n} waiting stage run(s) dropped)")


@app.command("send")
def send_course_cli(
    course_id: int = typer.Argument(..., help="Course id."),
    to: Optional[str] = typer.Option(None, "--to", help="Destination name (default: the "
                                     "course's rule, else the sender's destination)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """C-STORE a course's auto-contoured RTSTRUCT now, e.g. after the PACS was down."""
    from rtnode import views

    cfg = get_config(config)
    book = _book(cfg)
    try:
        reports = views.send_course(cfg, book, course_id, to)
    except views.SendError as exc:
        raise fail(str(exc), 1) from None
    except ViewError as exc:
        raise fail(str(exc)) from None
    for r in reports:
        out.print(f"[green]sent[/] {r['file']} to {r['destination']} "
                  f"({len(r['attempts'])} attempt(s))")



def _set_pause(queue: Optional[str], paused: bool, config: Optional[Path]) -> None:
    from rtnode import views

    if queue not in (None, "gpu", "cpu"):
        raise fail(f"queue must be gpu or cpu, not {queue!r}")
    cfg = get_config(config)
    book = _book(cfg)
    for q in views.set_paused(book, queue, paused):
        out.print(f"{q} queue {'paused: running tasks finish, nothing new starts' if paused else 'resumed'}")
    if not paused:
        views.wake_node(cfg)
    _note_if_down(cfg)


@queue_app.command("pause")
def queue_pause(queue: Optional[str] = typer.Argument(None, help="gpu or cpu (default both)."),
                config: Optional[Path] = ConfigOption) -> None:
    """Hold a queue: running tasks finish, nothing new is dispatched."""
    _set_pause(queue, True, config)


@queue_app.command("resume")
def queue_resume(queue: Optional[str] = typer.Argument(None, help="gpu or cpu (default both)."),
                 config: Optional[Path] = ConfigOption) -> None:
    """Release a held queue."""
    _set_pause(queue, False, config)


@app.command("stages")
def list_stages(config: Optional[Path] = ConfigOption, as_json: bool = JsonOption) -> None:
    """The stages this installation can run (built-in and stages.plugins)."""
    from rtnode.views import stages_json

    rows = stages_json(get_config(config))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["name", "queue", "needs", "after", "uses", "writes", "timeout_s",
                           "description"], "stages")


# -- config ------------------------------------------------------------------------------------

@config_app.command("check")
def config_check(config: Optional[Path] = ConfigOption) -> None:
    """Validate a config file and the rules it points to; print every problem with its file,
    line and key."""
    from rtnode.courses.rules import RulesError, check_references, load_rules
    from rtnode.stages.base import load_stages

    cfg = get_config(config)
    try:
        rules = load_rules(cfg.rules_dir, load_stages(cfg.stages.plugins))
        if check_references(rules, cfg):
            raise RulesError(check_references(rules, cfg))
    except RulesError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]rules error:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ImportError as exc:
        raise fail(f"stages.plugins: cannot import {exc.name}: {exc}") from None
    out.print(f"[green]ok[/] {cfg.source or 'embedded defaults'} "
              f"(storage root {cfg.storage_root}; {len(rules.rules)} rule(s) from "
              f"{cfg.rules_dir})")


@config_app.command("show")
def config_show(config: Optional[Path] = ConfigOption) -> None:
    """Print the effective configuration (file + environment + defaults) as YAML."""
    import yaml

    cfg = get_config(config)
    data = cfg.model_dump(mode="json")
    data["storage"]["root"] = str(cfg.storage_root)
    if data.get("export", {}).get("pseudonym_key"):
        data["export"]["pseudonym_key"] = "(set, not shown)"
    sys.stdout.write(f"# source: {cfg.source or 'embedded defaults'}\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


# -- workers -----------------------------------------------------------------------------------

@app.command()
def worker(
    queue: str = typer.Option(..., "--queue", "-q", help="gpu or cpu."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="Process workers (default: the cpu budget; 1 for "
                                               "gpu, one consumer per GPU with RTNODE_DEVICE)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Run one queue's consumer alone (scale-out: another host sharing storage and Redis)."""
    from rtnode.config import find_config
    from rtnode.logs import setup_logging
    from rtnode.queue.worker import run_consumer

    if queue not in ("gpu", "cpu"):
        raise fail(f"--queue must be gpu or cpu, not {queue!r}")
    cfg = get_config(config)
    path = find_config(config)
    if path is None:
        raise fail("rtnode worker needs a config file (--config or $RTNODE_CONFIG) so that "
                   "it finds the node's storage and queues")
    n = workers or (cfg.workers.cpu_budget() if queue == "cpu" else 1)
    setup_logging(cfg.logging.level, cfg.log_file, cfg.logging)
    run_consumer(path.resolve(), queue, n)


@app.command()
def workers(config: Optional[Path] = ConfigOption, as_json: bool = JsonOption) -> None:
    """Every registered queue worker, on any host: queue, host, pid, slots, last heartbeat."""
    rows = registered_workers(get_config(config))
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["queue", "host", "pid", "slots", "device", "heartbeat_at", "age_s",
                           "live"], "workers")


@app.command()
def demo(
    to: Optional[str] = typer.Option(None, "--to", help="AE@HOST:PORT of the node (default: "
                                     "this config's AE title and port on this host)."),
    config: Optional[Path] = ConfigOption,
    timeout: float = typer.Option(600.0, help="Seconds to follow the course."),
) -> None:
    """Send a generated phantom course to the node and follow it until its stages finish."""
    from rtnode.demo import DemoError, run_demo
    from rtnode.dicom.scu import AddressError, Peer, parse_peer
    from rtnode.node_info import read_node_info

    cfg = get_config(config)
    try:
        if to:
            peer = parse_peer(to)
        else:
            from rtnode.node_info import node_is_up

            info = read_node_info(cfg.storage_root)
            if info is None or not node_is_up(info):
                raise fail(f"the node is not running (no live node.json under "
                           f"{cfg.storage_root}): start it with `rtnode serve` (same --config), "
                           f"or give --to AE@HOST:PORT")
            peer = Peer(cfg.dicom.ae_title, info.host, info.port)
    except AddressError as exc:
        raise fail(str(exc)) from None
    with out.status(f"working with {peer}") as spinner:
        try:
            course = run_demo(cfg, peer, lambda m: spinner.console.print(m), timeout=timeout)
        except DemoError as exc:
            raise fail(str(exc)) from None
    if course is None:
        raise typer.Exit(1)
    out.print(f"course {course['id']} {course['state']}; outputs in {course['output_dir']}:")
    folder = Path(course["output_dir"])
    for f in sorted(folder.rglob("*")) if folder.exists() else []:
        if f.is_file():
            out.print(f"  {f.relative_to(folder)}  ({f.stat().st_size} bytes)")
    if course["state"] != "done":
        raise typer.Exit(1)


# -- cohorts -----------------------------------------------------------------------------------

@app.command()
def retrieve(
    source: Optional[str] = typer.Option(None, "--from", help="Remote name (config remotes:)."),
    patient_id: Optional[list[str]] = typer.Option(None, "--patient-id",
                                                   help="A PatientID; repeat for several."),
    patients: Optional[Path] = typer.Option(None, "--patients", help="File of PatientIDs: one "
                                            "per line, or a CSV with a PatientID column."),
    study_date: Optional[str] = typer.Option(None, "--study-date",
                                             help="YYYYMMDD-YYYYMMDD (either side open)."),
    modalities: str = typer.Option("CT,RTSTRUCT,RTPLAN,RTDOSE", "--modalities",
                                   help="Series modalities to move."),
    study_uid: Optional[str] = typer.Option(None, "--study-uid", help="One study."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what C-FIND found and what "
                                 "would be moved; move nothing."),
    window: Optional[str] = typer.Option(None, "--window", help="Off-peak window HH:MM-HH:MM "
                                         "(e.g. 22:00-06:00); moves pause outside it."),
    resume: Optional[int] = typer.Option(None, "--resume", help="Finish job N (see "
                                         "rtnode retrievals)."),
    everything: bool = typer.Option(False, "--all", help="No selector: everything the PACS "
                                    "holds in --modalities (must be said explicitly)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per event."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Retrieve a cohort from a PACS: C-FIND, then C-MOVE series by series to our AE title."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from rtnode.cohorts.retrieve import RetrievalError, Retriever
    from rtnode.cohorts.selectors import (
        SelectorError,
        Selectors,
        Window,
        parse_modalities,
        parse_study_date,
        read_patients_file,
    )
    from rtnode.store.index import open_index

    cfg = get_config(config)
    index = open_index(cfg)
    try:
        win = Window.parse(window) if window else None
        if resume is not None:
            rows = index.query("SELECT remote, selectors, state FROM retrievals WHERE id=?",
                               (resume,))
            if not rows:
                raise fail(f"no retrieval job {resume} (see rtnode retrievals)")
            if rows[0]["state"] == "done":
                raise fail(f"job {resume} is already done")
            source = rows[0]["remote"]
            sel = Selectors(**json.loads(rows[0]["selectors"]))
        else:
            if not source:
                raise fail("--from NAME is required (a remote from the config)")
            ids = list(patient_id or []) + (read_patients_file(patients) if patients else [])
            if not (ids or study_date or study_uid or everything):
                raise fail("no selector: give --patient-id, --patients, --study-date or "
                           "--study-uid, or --all to retrieve everything the PACS holds")
            sel = Selectors(patient_ids=list(dict.fromkeys(ids)),
                            study_date=parse_study_date(study_date) if study_date else None,
                            study_uid=study_uid, modalities=parse_modalities(modalities))
    except SelectorError as exc:
        raise fail(str(exc)) from None

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=err, transient=False, disable=as_json)
    tasks: dict[str, Any] = {}

    def emit(event: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
            return
        kind = event["event"]
        if kind == "job_start":
            tasks["series"] = bar.add_task("series", total=event["series"])
            tasks["instances"] = bar.add_task("instances", total=None)
        elif kind in ("series_done", "series_failed"):
            bar.advance(tasks["series"])
            bar.advance(tasks["instances"], event["completed"])
            if kind == "series_failed":
                bar.console.print(f"[red]series {event['series_uid']} failed:[/] "
                                  f"{event['error'] or 'sub-operations failed'}")
        elif kind == "series_retry":
            bar.console.print(f"retrying series {event['series_uid']} (attempt "
                              f"{event['attempt']}): {event['error'] or 'partial move'}")
        elif kind == "paused":
            bar.console.print(f"outside the window {event['window']}: waiting")

    try:
        retriever = Retriever(cfg, index, source, emit)
        if resume is not None:
            job = resume
        else:
            found = retriever.find(sel)
            if not found:
                raise fail(f"C-FIND on {retriever.scu} found no {','.join(sel.modalities)} "
                           f"series for {sel.describe()}", 1)
            todo = [f for f in found if not f.complete_here]
            if dry_run or not as_json:
                report = [{"patient_id": f.patient_id, "study_uid": f.study_uid,
                           "series_uid": f.series_uid, "modality": f.modality,
                           "instances": f.expected, "here": f.have,
                           "action": "skip (complete here)" if f.complete_here else "move"}
                          for f in found]
                if as_json:
                    for row in report:
                        emit({"event": "found", **row})
                else:
                    out.print(f"{len({f.patient_id for f in found})} patient(s), "
                              f"{len({f.study_uid for f in found})} stud(ies), {len(found)} "
                              f"series, {sum(f.expected or 0 for f in found)} instances; "
                              f"{len(todo)} series to move")
                    print_table(report, ["patient_id", "modality", "instances", "here",
                                         "action", "series_uid"], "found")
            missing = [p for p in sel.patient_ids if p not in {f.patient_id for f in found}]
            if missing and not as_json:
                out.print(f"not found on {source} (no {','.join(sel.modalities)} series "
                          f"matching): {len(missing)} patient(s): " + ", ".join(missing),
                          highlight=False, soft_wrap=True)
            elif missing:
                for p in missing:
                    emit({"event": "not_found", "patient_id": p})
            if dry_run:
                return
            job = retriever.create_job(sel, found)
            if not as_json:
                out.print(f"retrieval job {job} (resume with: rtnode retrieve --resume {job})")
        with bar:
            summary = retriever.run(job, win)
    except RetrievalError as exc:
        raise fail(str(exc)) from None
    finally:
        index.close()
    if not as_json:
        out.print(f"job {job} {summary['state']}: {summary['done']} series moved, "
                  f"{summary['skipped']} already here, {summary['failed']} failed; "
                  f"{summary['instances']} instances")
    if summary["state"] != "done":
        raise typer.Exit(1)


@app.command()
def retrievals(config: Optional[Path] = ConfigOption, as_json: bool = JsonOption) -> None:
    """Retrieval jobs and how far each got."""
    from rtnode.cohorts.retrieve import list_jobs

    index = _open_index(get_config(config))
    rows = [] if index is None else list_jobs(index)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["series_done"] = f"{r['series']['done'] + r['series']['skipped']}/" \
                           f"{sum(r['series'].values())}"
    print_table(rows, ["id", "remote", "state", "series_done", "completed", "failed",
                       "created_at", "finished_at"], "retrievals")


@app.command("import")
def import_files(
    path: Path = typer.Argument(..., exists=True, help="A DICOM file or a folder of them."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into folders."),
    cohort: bool = typer.Option(False, "--cohort", help="Research cohort: its courses run at "
                                "cohort priority (default: like clinical arrivals)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """File DICOM files from disk exactly like received instances (checks, dedupe, index)."""
    from rich.progress import Progress

    from rtnode.cohorts.importer import dicom_candidates, import_path
    from rtnode.store.archive import Archive

    cfg = get_config(config)
    archive = Archive.from_config(cfg)
    total = sum(1 for _ in dicom_candidates(path, recursive))
    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(f"importing {path}", total=total)
            counts = import_path(archive, path, recursive=recursive, cohort=cohort,
                                 progress=lambda _p, _k: progress.advance(task))
    finally:
        archive.close()
    out.print(f"{counts['received']} new, {counts['duplicate']} already here, "
              f"{counts['replaced']} replaced, {counts['rejected']} refused, "
              f"{counts['not_dicom']} not DICOM (skipped)")
    from rtnode.cohorts.importer import skipped_folders

    if not recursive and (skipped := skipped_folders(path)):
        out.print(f"{skipped} subfolder(s) of {path} skipped: add --recursive (-r) to import "
                  f"them too", highlight=False, soft_wrap=True)
    if counts["rejected"]:
        raise typer.Exit(1)


# -- engines usable without a running node ---------------------------------------------------

from rtnode.clierrors import dicom_options, guard_commands  # noqa: E402
from rtnode.deletecli import delete_app  # noqa: E402
from rtnode.dvh.cli import dvh_command  # noqa: E402
from rtnode.export import export_command  # noqa: E402
from rtnode.qc.cli import qc_command  # noqa: E402
from rtnode.radiomics.cli import radiomics_command  # noqa: E402
from rtnode.segmentation.cli import segment_command  # noqa: E402

app.command("dvh")(dicom_options(("path",), rtstruct="RTSTRUCT", rtdose="RTDOSE",
                                 rtplan="RTPLAN")(dvh_command))
app.command("segment")(segment_command)
app.command("radiomics")(dicom_options(("path",), rtstruct="RTSTRUCT")(radiomics_command))
app.command("qc")(qc_command)
app.command("export")(export_command)
app.add_typer(delete_app, name="delete")
guard_commands(app)  # last: every command's input errors end in one line, not a traceback


def run() -> None:  # pragma: no cover - console entry for python -m rtnode
    app(prog_name="rtnode")


if __name__ == "__main__":  # pragma: no cover
    run()
