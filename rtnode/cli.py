"""The ``rtnode`` command: serve the node, and look into it.

Every listing takes ``--json`` and then prints stable keys (documented in the README) for
scripts; without it, a rich table for people. Problems a person must fix end with one line on
standard error and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from rtnode import __version__
from rtnode.config import Config, ConfigError, load_config

app = typer.Typer(
    name="rtnode", add_completion=False,
    help="A DICOM node for radiotherapy: receives, files and indexes studies.")
config_app = typer.Typer(no_args_is_help=True, help="Check and show the configuration.")
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

ConfigOption = typer.Option(
    None, "--config", "-c", help="Config file (default: $RTNODE_CONFIG, else ./config.yaml, "
    "else embedded defaults).", show_default=False)
JsonOption = typer.Option(False, "--json", help="Print JSON with stable keys (see README).")
PatientOption = typer.Option(None, "--patient-id", help="Only this PatientID.")


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def get_config(path: Optional[Path]) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]config error:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    table = Table(title=f"{title} ({len(rows)})", show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    out.print(table)


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
    """Run the node: the DICOM listener on the configured AE title and port."""
    from pydantic import ValidationError

    from rtnode.logs import setup_logging
    from rtnode.node import Node, NodeAlreadyRunning

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
    setup_logging(cfg.logging.level, cfg.log_file)
    try:
        code = Node(cfg).run()
    except NodeAlreadyRunning as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot start the listener on {cfg.dicom.bind}:{cfg.dicom.port}: "
                   f"{exc.strerror or exc}") from None
    raise typer.Exit(code)


# -- echo --------------------------------------------------------------------------------------

@app.command()
def echo(
    peer: str = typer.Argument(..., help="AE@HOST:PORT of the peer, e.g. ORTHANC@127.0.0.1:4242"),
    config: Optional[Path] = ConfigOption,
    calling_ae: Optional[str] = typer.Option(None, "--calling-ae",
                                             help="Our AE title for this call (default dicom.ae_title)."),
    timeout: float = typer.Option(10.0, help="Seconds before giving up."),
) -> None:
    """Send a C-ECHO and say whether the peer answered."""
    from rtnode.dicom.scu import AddressError, echo as c_echo, parse_peer

    try:
        target = parse_peer(peer)
    except AddressError as exc:
        raise fail(str(exc)) from None
    calling = calling_ae or get_config(config).dicom.ae_title
    result = c_echo(target, calling_ae=calling, timeout=timeout)
    if not result.ok:
        raise fail(result.detail, 1)
    out.print(f"[green]ok[/] {result.detail}")


# -- status and listings -----------------------------------------------------------------------

def _open_index(cfg: Config):
    from rtnode.store.index import Index

    path = cfg.storage_root / "index.sqlite"
    if not path.exists():
        return None
    return Index(path, durable=cfg.storage.fsync)


def node_status(cfg: Config) -> dict[str, Any]:
    """The data behind ``rtnode status``; the keys are the documented JSON keys."""
    from rtnode.node import node_is_up, read_node_info

    root = cfg.storage_root
    info = read_node_info(root)
    up = node_is_up(info)
    index = _open_index(cfg)
    counts = {"patients": 0, "studies": 0, "series": 0, "instances": 0}
    events: dict[str, int] = {}
    last = None
    if index is not None:
        counts, events, last = index.counts(), index.event_counts(), index.last_received()
        index.close()
    probe = root if root.exists() else root.parent
    free_gb = shutil.disk_usage(probe).free / 1024**3 if probe.exists() else None
    return {
        "version": __version__,
        "node": {
            "up": up,
            "pid": info.pid if info and up else None,
            "ae_title": info.ae_title if info and up else cfg.dicom.ae_title,
            "port": info.port if info and up else cfg.dicom.port,
            "started_at": info.started_at if info and up else None,
        },
        "counts": counts,
        "events": {k: events.get(k, 0) for k in ("received", "duplicate", "replaced",
                                                  "rejected", "association_rejected")},
        "last_received": last,
        "storage": {"root": str(root), "free_gb": None if free_gb is None else round(free_gb, 2),
                    "min_free_gb": cfg.storage.min_free_gb},
    }


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
    c = s["counts"]
    out.print(f"holds:         {c['patients']} patients, {c['studies']} studies, "
              f"{c['series']} series, {c['instances']} instances")
    e = s["events"]
    out.print(f"events:        {e['received']} received, {e['duplicate']} duplicates, "
              f"{e['replaced']} replaced, {e['rejected']} rejected, "
              f"{e['association_rejected']} associations rejected")
    out.print(f"last received: {s['last_received'] or 'never'}")
    st = s["storage"]
    out.print(f"storage:       {st['root']} ({st['free_gb']} GB free, "
              f"refuses below {st['min_free_gb']} GB)")


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


# -- config ------------------------------------------------------------------------------------

@config_app.command("check")
def config_check(config: Optional[Path] = ConfigOption) -> None:
    """Validate a config file; print every problem with its file, line and key."""
    cfg = get_config(config)
    out.print(f"[green]ok[/] {cfg.source or 'embedded defaults'} "
              f"(storage root {cfg.storage_root})")


@config_app.command("show")
def config_show(config: Optional[Path] = ConfigOption) -> None:
    """Print the effective configuration (file + environment + defaults) as YAML."""
    import yaml

    cfg = get_config(config)
    data = cfg.model_dump(mode="json")
    data["storage"]["root"] = str(cfg.storage_root)
    sys.stdout.write(f"# source: {cfg.source or 'embedded defaults'}\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def run() -> None:  # pragma: no cover - console entry for python -m rtnode
    app(prog_name="rtnode")


if __name__ == "__main__":  # pragma: no cover
    run()
