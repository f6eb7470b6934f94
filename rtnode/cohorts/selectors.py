"""What a retrieval asks for, parsed from the command line with errors that say what to fix."""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_MODALITIES = ("CT", "RTSTRUCT", "RTPLAN", "RTDOSE")
_DATE_RANGE = re.compile(r"^(\d{8})?-(\d{8})?$|^(\d{8})$")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class SelectorError(ValueError):
    pass


@dataclass
class Selectors:
    patient_ids: list[str] = field(default_factory=list)
    study_date: str | None = None
    study_uid: str | None = None
    modalities: list[str] = field(default_factory=lambda: list(DEFAULT_MODALITIES))

    def as_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = []
        if self.patient_ids:
            shown = ", ".join(self.patient_ids[:5]) + (" …" if len(self.patient_ids) > 5 else "")
            parts.append(f"patients {shown}")
        if self.study_date:
            parts.append(f"study date {self.study_date}")
        if self.study_uid:
            parts.append(f"study {self.study_uid}")
        return "; ".join(parts) or "everything"


def read_patients_file(path: Path) -> list[str]:
    """One PatientID per line, or a CSV with a PatientID column."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SelectorError(f"--patients {path}: cannot read: {exc.strerror}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SelectorError(f"--patients {path}: the file is empty")
    if "," in lines[0] or ";" in lines[0] or "\t" in lines[0]:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
        rows = list(csv.DictReader(lines, dialect=dialect))
        columns = [c.strip() for c in (rows[0].keys() if rows else lines[0].split(","))]
        key = next((c for c in (rows[0].keys() if rows else []) if c.strip().lower()
                    in ("patientid", "patient_id", "patient id")), None)
        if key is None:
            raise SelectorError(f"--patients {path}: a CSV needs a PatientID column "
                                f"(found: {', '.join(columns)})")
        ids = [(r.get(key) or "").strip() for r in rows]
        empty = [i + 2 for i, v in enumerate(ids) if not v]
        if empty:
            raise SelectorError(f"--patients {path}:{empty[0]}: empty PatientID")
        return list(dict.fromkeys(ids))
    for n, line in enumerate(lines, start=1):
        if len(line.strip()) > 64 or "\\" in line:
            raise SelectorError(f"--patients {path}:{n}: {line.strip()[:40]!r} is not a "
                                "PatientID (at most 64 characters, no backslash)")
    return list(dict.fromkeys(line.strip() for line in lines))


def parse_study_date(value: str) -> str:
    v = value.strip()
    m = _DATE_RANGE.match(v)
    if not m:
        raise SelectorError(f"--study-date {value!r}: use YYYYMMDD-YYYYMMDD (either side may be "
                            "left open) or one YYYYMMDD")
    for d in (x for x in m.groups() if x):
        try:
            dt.datetime.strptime(d, "%Y%m%d")
        except ValueError:
            raise SelectorError(f"--study-date {value!r}: {d} is not a date") from None
    return v


def parse_modalities(value: str) -> list[str]:
    mods = [m.strip().upper() for m in value.split(",") if m.strip()]
    if not mods:
        raise SelectorError("--modalities: give at least one, e.g. CT,RTSTRUCT,RTPLAN,RTDOSE")
    return mods


@dataclass(frozen=True)
class Window:
    """An off-peak window, possibly across midnight (22:00-06:00)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, value: str) -> "Window":
        m = _WINDOW.match(value.strip())
        if not m:
            raise SelectorError(f"--window {value!r}: use HH:MM-HH:MM, e.g. 22:00-06:00")
        h1, m1, h2, m2 = map(int, m.groups())
        return cls(dt.time(h1, m1), dt.time(h2, m2))

    def __contains__(self, moment: dt.datetime) -> bool:
        t = moment.time()
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"
