"""``rtnode export``: cohort tables across courses — DVH metrics, radiomics and a QC summary —
each row carrying the patient, course, revision and plan identifiers, in one .xlsx (a sheet per
table), or one .csv/.parquet file per table.

Tables come from the files the stages left in each course's latest revision; a stage whose
outputs were reused from an earlier revision is found in that revision's folder.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from rtnode.cliconfig import ConfigFile, config_or_exit

TABLES = ("dvh", "radiomics", "qc")
SOURCES = {"dvh": "dvh_metrics.csv", "radiomics": "radiomics.csv", "qc": "qc.json"}
FORMATS = (".xlsx", ".csv", ".parquet")


class ExportError(ValueError):
    """Bad arguments or an unreadable store; the message says which."""


@dataclass
class CourseRef:
    """One course's identity and where its revision folders are."""

    course_id: int
    patient_id: str
    revision: int
    created_at: str
    folder: Path  # storage/courses/<id>
    ids: dict[str, Any]
    members_json: tuple[str, ...] = ()  # the course's and revision's members (pseudonymising)

    def find(self, name: str) -> Path | None:
        """The newest revision folder holding ``name`` (outputs may be reused from older ones)."""
        for rev in range(self.revision, 0, -1):
            path = self.folder / f"r{rev}" / name
            if path.exists():
                return path
        return None


def plan_ids(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Study and plan identifiers of a revision, from its members' indexed attributes."""
    plans = [m for m in members if m.get("modality") == "RTPLAN"]
    studies = sorted({m.get("study_uid", "") for m in members} - {""})
    return {"study_uid": ";".join(studies),
            "plan_labels": ";".join(sorted(str((m.get("attrs") or {}).get("RTPlanLabel") or "")
                                           for m in plans)),
            "plan_uids": ";".join(sorted(m["sop_instance_uid"] for m in plans))}


def find_courses(storage_root: Path, courses: list[int] | None = None,
                 since: dt.date | None = None, index_url: str = "") -> list[CourseRef]:
    """Courses with at least one revision, optionally only the given ids and those whose latest
    revision was made on or after ``since``."""
    from rtnode.courses.book import CourseBook
    from rtnode.store.index import Index

    path = storage_root / "index.sqlite"
    if not index_url and not path.exists():
        raise ExportError(f"no index under {storage_root}: nothing received yet")
    book = CourseBook(Index(index_url or path, durable=False))
    rows = book.courses()
    if courses:
        known = {r["id"] for r in rows}
        unknown = sorted(set(courses) - known)
        if unknown:
            raise ExportError(f"no course with id {', '.join(map(str, unknown))}")
        rows = [r for r in rows if r["id"] in set(courses)]
    out = []
    for row in rows:
        rev = book.latest_revision(row["id"])
        if rev is None:
            continue
        if since is not None and dt.datetime.fromisoformat(rev["created_at"]).date() < since:
            continue
        members = json.loads(rev["members"] or "[]")
        ref = CourseRef(row["id"], row["patient_id"], rev["revision"], rev["created_at"],
                        storage_root / "courses" / str(row["id"]), {},
                        (rev["members"], row["members"]))
        ref.ids = {"course_id": ref.course_id, "patient_id": ref.patient_id,
                   "revision": ref.revision, **plan_ids(members)}
        out.append(ref)
    return out


def _with_ids(frame, ids: dict[str, Any]):
    import pandas as pd

    rest = frame.drop(columns=[c for c in ids if c in frame.columns])
    head = pd.DataFrame({k: [v] * len(rest) for k, v in ids.items()}, index=rest.index)
    return pd.concat([head, rest], axis=1)


def qc_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One QC summary row: overall status, counts, and each check's status."""
    row: dict[str, Any] = {"qc_status": doc.get("status")}
    row.update({f"n_{k}": v for k, v in (doc.get("counts") or {}).items()})
    for c in doc.get("checks", []):
        row[c["id"]] = c["status"]
    failing = [f"{c['id']}: {c['reason']}" for c in doc.get("checks", [])
               if c["status"] in ("fail", "warn")]
    row["findings"] = " | ".join(failing)
    return row


def course_tables(ref: CourseRef) -> dict[str, Any]:
    """This course's rows of every table (missing outputs give no rows)."""
    import pandas as pd

    out: dict[str, Any] = {}
    for table in TABLES:
        path = ref.find(SOURCES[table])
        if path is None:
            continue
        if table == "qc":
            frame = pd.DataFrame([qc_row(json.loads(path.read_text()))])
        else:
            frame = pd.read_csv(path)
        out[table] = _with_ids(frame, ref.ids)
    return out


def build_tables(refs: list[CourseRef],
                 progress: Callable[[CourseRef], None] | None = None,
                 transform: Callable[[CourseRef, Any], Any] | None = None) -> dict[str, Any]:
    """Every table across courses; ``transform`` (e.g. pseudonymising) sees each course's
    frames before they are joined."""
    import pandas as pd

    parts: dict[str, list] = {t: [] for t in TABLES}
    for ref in refs:
        for table, frame in course_tables(ref).items():
            parts[table].append(transform(ref, frame) if transform else frame)
        if progress is not None:
            progress(ref)
    return {t: (pd.concat(p, ignore_index=True) if p else pd.DataFrame()) for t, p in
            parts.items()}


def write_tables(tables: dict[str, Any], out: Path) -> list[Path]:
    """.xlsx: one workbook, a sheet per table; .csv/.parquet: <stem>_<table><suffix> each."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ExportError(f"--out must end in {', '.join(FORMATS)}, not {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".xlsx":
        import pandas as pd

        with pd.ExcelWriter(out, engine="openpyxl") as writer:
            for name, frame in tables.items():
                frame.to_excel(writer, sheet_name=name, index=False)
        return [out]
    paths = []
    for name, frame in tables.items():
        path = out.with_name(f"{out.stem}_{name}{suffix}")
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.columns = [str(c) for c in frame.columns]
            frame.to_parquet(path, index=False)
        paths.append(path)
    return paths


def export_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="FILE.xlsx (a sheet per table), or "
                                                          "FILE.csv / FILE.parquet (one file per "
                                                          "table: FILE_dvh, FILE_radiomics, "
                                                          "FILE_qc).")],
    courses: Annotated[Optional[list[int]], typer.Option(
        "--courses", help="Course id to export; repeat for several (default: all).")] = None,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="Only courses whose latest revision was made on or after this date "
                        "(YYYY-MM-DD).")] = None,
    pseudonymise: Annotated[Optional[bool], typer.Option(
        "--pseudonymise/--no-pseudonymise",
        help="Replace PatientIDs, names, dates and UIDs with stable keyed pseudonyms "
             "(default: export.pseudonymise).", show_default=False)] = None,
    mapping: Annotated[Optional[Path], typer.Option(
        "--mapping", help="Pseudonym -> original CSV, written 0600 (default: "
                          "export.mapping_file).")] = None,
    config_file: ConfigFile = None,
) -> None:
    """Cohort tables across courses: DVH metrics, radiomics and QC summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    config = config_or_exit(config_file)
    try:
        day = dt.date.fromisoformat(since) if since else None
    except ValueError:
        typer.echo(f"error: --since {since!r} is not a date YYYY-MM-DD", err=True)
        raise typer.Exit(code=2) from None
    if out.suffix.lower() not in FORMATS:
        typer.echo(f"error: --out must end in {', '.join(FORMATS)}", err=True)
        raise typer.Exit(code=2)
    try:
        refs = find_courses(config.storage_root, courses, day, config.index.url)
    except ExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    transform = None
    pseudo = None
    if config.export.pseudonymise if pseudonymise is None else pseudonymise:
        from rtnode.pseudonymise import PseudonymError, Pseudonymiser

        try:
            pseudo = Pseudonymiser(config.export.pseudonym_key)
        except PseudonymError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        transform = _pseudonymising(pseudo, config.storage_root, config.index.url)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), transient=True) as bar:
        task = bar.add_task("exporting courses", total=len(refs))
        tables = build_tables(refs, progress=lambda ref: bar.advance(task), transform=transform)
    paths = write_tables(tables, out)
    counts = ", ".join(f"{name} {len(frame)} row(s)" for name, frame in tables.items())
    typer.echo(f"{len(refs)} course(s): {counts} -> {', '.join(map(str, paths))}")
    if pseudo is not None:
        where = pseudo.write_mapping(mapping or config.pseudonym_mapping)
        typer.echo(f"pseudonymised; the way back is in {where} (mode 0600: keep it apart from "
                   f"the export)")


def _pseudonymising(pseudo, storage_root: Path,
                    index_url: str = "") -> Callable[[CourseRef, Any], Any]:
    """Per course: its identifiers (from the index) replaced in each of its frames."""
    from rtnode.pseudonymise import course_identity
    from rtnode.store.index import Index

    index = Index(index_url or storage_root / "index.sqlite", durable=False)
    cache: dict[int, dict[str, str]] = {}

    def apply(ref: CourseRef, frame):
        if ref.course_id not in cache:
            identity = course_identity(index, ref.course_id, ref.patient_id, ref.members_json)
            cache[ref.course_id] = pseudo.replacements(identity)
        return pseudo.frame(frame, cache[ref.course_id])

    return apply
