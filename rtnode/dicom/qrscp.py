"""Query/Retrieve SCP: Study Root C-FIND, C-MOVE to known destinations, and C-GET, over what
rtnode holds — received instances and its own outputs filed through the archive (the auto
RTSTRUCT of each course is an instance of the course's study).

Association policy is the listener's: the same AE, allow-list (``dicom.allowed_callers``) and
transport; this module only adds presentation contexts and event handlers. C-MOVE sends only to
a destination or remote named in the config (matched by AE title), never to an address taken
from the request, so a caller cannot make rtnode push patient data anywhere else.

Matching follows PS3.4 C.2.2.2: single value (with ``*``/``?`` wildcards on text), UID lists,
date/time ranges, universal matching for empty keys. Candidate rows are narrowed in SQL on the
unique keys (plain, parameterised ``?`` SQL through the Index's connection API) and the rest is
matched here.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from rtnode.store.archive import Archive

log = logging.getLogger("rtnode.dicom.qr")

QR_CONTEXTS = (StudyRootQueryRetrieveInformationModelFind,
               StudyRootQueryRetrieveInformationModelMove,
               StudyRootQueryRetrieveInformationModelGet)
#: a requestor may propose at most 128 presentation contexts
MAX_CONTEXTS = 128
CHUNK = 500

# status codes (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
PENDING = 0xFF00
SUCCESS = 0x0000
CANCEL = 0xFE00
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000

# attribute keyword -> (row column, kind) per level; kind: text | uid | date | time | int
STUDY_KEYS = {
    "PatientID": ("patient_id", "text"), "PatientName": ("patient_name", "text"),
    "PatientBirthDate": ("birth_date", "date"), "PatientSex": ("sex", "text"),
    "StudyInstanceUID": ("study_uid", "uid"), "StudyDate": ("study_date", "date"),
    "StudyTime": ("study_time", "time"), "AccessionNumber": ("accession_number", "text"),
    "StudyDescription": ("study_description", "text"), "StudyID": ("study_id", "text"),
    "ModalitiesInStudy": ("modalities", "list"),
    "NumberOfStudyRelatedSeries": ("series_count", "int"),
    "NumberOfStudyRelatedInstances": ("instance_count", "int"),
}
SERIES_KEYS = {
    "SeriesInstanceUID": ("series_uid", "uid"), "Modality": ("modality", "text"),
    "SeriesNumber": ("series_number", "int"), "SeriesDescription": ("series_description", "text"),
    "FrameOfReferenceUID": ("frame_of_reference_uid", "uid"),
    "NumberOfSeriesRelatedInstances": ("series_instances", "int"),
}
IMAGE_KEYS = {
    "SOPInstanceUID": ("sop_instance_uid", "uid"), "SOPClassUID": ("sop_class_uid", "uid"),
    "InstanceNumber": ("instance_number", "int"),
}
LEVEL_KEYS = {"STUDY": STUDY_KEYS, "SERIES": {**STUDY_KEYS, **SERIES_KEYS},
              "IMAGE": {**STUDY_KEYS, **SERIES_KEYS, **IMAGE_KEYS}}
#: derived per-study values not stored as columns
COMPUTED = {"modalities", "series_count", "instance_count", "series_instances", "study_id"}


class BadQuery(ValueError):
    """An identifier we cannot answer (unknown level, missing unique key)."""


# -- matching -----------------------------------------------------------------------------------

def _values(element_value: Any) -> list[str]:
    if element_value is None:
        return []
    if isinstance(element_value, (list, tuple)) or type(element_value).__name__ == "MultiValue":
        return [str(v) for v in element_value]
    return [str(element_value)]


def matches(kind: str, wanted: Any, value: Any) -> bool:
    """One key of a C-FIND identifier against one stored value (PS3.4 C.2.2.2)."""
    patterns = [p for p in _values(wanted) if p != ""]
    if not patterns:
        return True  # universal matching
    if kind == "list":
        have = set(value or [])
        return any(p in have for p in patterns)
    text = "" if value is None else str(value)
    for p in patterns:
        if kind in ("date", "time") and "-" in p:
            lo, _, hi = p.partition("-")
            if text and (not lo or text[:len(lo)] >= lo) and (not hi or text[:len(hi)] <= hi):
                return True
            continue
        if kind in ("uid", "int"):
            if text == p:
                return True
            continue
        if "*" in p or "?" in p:
            if fnmatch.fnmatchcase(text, p.replace("[", "[[]")):
                return True
        elif text == p:
            return True
    return False


def _exact(wanted: Any) -> list[str]:
    """Values usable as an exact SQL filter (no wildcard, no range), or []."""
    vals = [v for v in _values(wanted) if v != ""]
    if not vals or any(("*" in v or "?" in v or "-" in v) for v in vals):
        return []
    return vals


# -- the index side -----------------------------------------------------------------------------

@dataclass
class Holding:
    """What a retrieve sends: one stored instance."""

    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str
    sop_instance_uid: str

    def read(self) -> Dataset:
        """The stored data set (pynetdicom re-encodes it for the negotiated context; values
        untouched stay raw, so nothing is rewritten on the way)."""
        import pydicom

        return pydicom.dcmread(self.path)


class HeldIndex:
    """Read-only queries over the index for C-FIND and the retrieves."""

    def __init__(self, archive: Archive, ae_title: str):
        self.archive = archive
        self.index = archive.index
        self.ae_title = ae_title

    def _in(self, column: str, values: list[str], where: list[str], args: list[Any]) -> None:
        where.append(f"{column} IN ({','.join('?' * len(values))})")
        args.extend(values)

    def rows(self, level: str, ident: Dataset) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        for keyword, column in (("PatientID", "p.patient_id"), ("StudyInstanceUID", "st.study_uid"),
                                ("SeriesInstanceUID", "se.series_uid"),
                                ("SOPInstanceUID", "i.sop_instance_uid"),
                                ("Modality", "se.modality")):
            if keyword in ident and (level != "STUDY" or keyword in ("PatientID",
                                                                      "StudyInstanceUID")):
                vals = _exact(ident.get(keyword))
                if vals and len(vals) <= CHUNK and (keyword != "SOPInstanceUID"
                                                    or level == "IMAGE"):
                    self._in(column, vals, where, args)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        if level == "STUDY":
            sql = ("SELECT p.patient_id, p.name AS patient_name, p.birth_date, p.sex,"
                   " st.id AS study_fk, st.study_uid, st.study_date, st.study_time,"
                   " st.description AS study_description, st.accession_number,"
                   " se.modality, COUNT(DISTINCT se.id) AS n_series, COUNT(i.id) AS n_instances"
                   " FROM studies st JOIN patients p ON st.patient_fk = p.id"
                   " JOIN series se ON se.study_fk = st.id JOIN instances i ON i.series_fk = se.id"
                   f"{cond} GROUP BY p.patient_id, p.name, p.birth_date, p.sex, st.id,"
                   " st.study_uid, st.study_date, st.study_time, st.description,"
                   " st.accession_number, se.modality ORDER BY st.study_date, st.study_uid")
            studies: dict[int, dict[str, Any]] = {}
            for r in self.index.query(sql, tuple(args)):
                r = dict(r)
                s = studies.setdefault(r["study_fk"], {**r, "modalities": [], "series_count": 0,
                                                       "instance_count": 0, "study_id": ""})
                s["modalities"].append(r["modality"])
                s["series_count"] += r["n_series"]
                s["instance_count"] += r["n_instances"]
            return list(studies.values())
        if level == "SERIES":
            sql = ("SELECT p.patient_id, p.name AS patient_name, p.birth_date, p.sex,"
                   " st.study_uid, st.study_date, st.study_time,"
                   " st.description AS study_description, st.accession_number,"
                   " se.series_uid, se.modality, se.series_number,"
                   " se.description AS series_description, se.frame_of_reference_uid,"
                   " COUNT(i.id) AS series_instances"
                   " FROM series se JOIN studies st ON se.study_fk = st.id"
                   " JOIN patients p ON st.patient_fk = p.id JOIN instances i ON i.series_fk = se.id"
                   f"{cond} GROUP BY p.patient_id, p.name, p.birth_date, p.sex, st.study_uid,"
                   " st.study_date, st.study_time, st.description, st.accession_number,"
                   " se.series_uid, se.modality, se.series_number, se.description,"
                   " se.frame_of_reference_uid ORDER BY st.study_uid, se.series_number")
            return [dict(r) for r in self.index.query(sql, tuple(args))]
        sql = ("SELECT p.patient_id, p.name AS patient_name, p.birth_date, p.sex, st.study_uid,"
               " st.study_date, st.study_time, st.description AS study_description,"
               " st.accession_number, se.series_uid, se.modality, se.series_number,"
               " se.description AS series_description, se.frame_of_reference_uid,"
               " i.sop_instance_uid, i.sop_class_uid, i.instance_number, i.path,"
               " i.transfer_syntax_uid"
               " FROM instances i JOIN series se ON i.series_fk = se.id"
               " JOIN studies st ON se.study_fk = st.id JOIN patients p ON st.patient_fk = p.id"
               f"{cond} ORDER BY st.study_uid, se.series_uid, i.instance_number, i.id")
        return [dict(r) for r in self.index.query(sql, tuple(args))]

    def find(self, ident: Dataset) -> Iterator[Dataset]:
        level = str(ident.get("QueryRetrieveLevel", "") or "").strip().upper()
        if level not in LEVEL_KEYS:
            raise BadQuery(f"QueryRetrieveLevel {level!r} is not STUDY, SERIES or IMAGE")
        keys = LEVEL_KEYS[level]
        asked = [e.keyword for e in ident if e.keyword and e.keyword != "QueryRetrieveLevel"]
        for row in self.rows(level, ident):
            if not all(matches(keys[k][1], ident.get(k), row.get(keys[k][0]))
                       for k in asked if k in keys):
                continue
            yield self._answer(level, ident, asked, keys, row)

    def _answer(self, level: str, ident: Dataset, asked: list[str],
                keys: dict[str, tuple[str, str]], row: dict[str, Any]) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for k in asked:
            if k in ("SpecificCharacterSet",):
                continue
            if k in keys:
                value = row.get(keys[k][0])
                if keys[k][1] == "list":
                    value = sorted(set(value or []))
                setattr(ds, k, "" if value is None else value)
            else:
                setattr(ds, k, None)  # a key we do not keep: returned empty
        ds.RetrieveAETitle = self.ae_title
        if any(ord(ch) > 127 for v in ds.values() for ch in str(getattr(v, "value", ""))):
            ds.SpecificCharacterSet = "ISO_IR 192"
        return ds

    def holdings(self, ident: Dataset) -> list[Holding]:
        """The instances a C-MOVE/C-GET identifier selects (by its level's unique keys)."""
        level = str(ident.get("QueryRetrieveLevel", "") or "").strip().upper()
        unique = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
                  "IMAGE": "SOPInstanceUID"}.get(level)
        if unique is None:
            raise BadQuery(f"QueryRetrieveLevel {level!r} is not STUDY, SERIES or IMAGE")
        wanted = [v for v in _values(ident.get(unique)) if v]
        if not wanted:
            raise BadQuery(f"a {level} level retrieve needs {unique}")
        column = {"STUDY": "st.study_uid", "SERIES": "se.series_uid",
                  "IMAGE": "i.sop_instance_uid"}[level]
        out: list[Holding] = []
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start:start + CHUNK]
            for r in self.index.query(
                    "SELECT i.path, i.sop_class_uid, i.transfer_syntax_uid, i.sop_instance_uid"
                    " FROM instances i JOIN series se ON i.series_fk = se.id"
                    " JOIN studies st ON se.study_fk = st.id"
                    f" WHERE {column} IN ({','.join('?' * len(chunk))})"
                    " ORDER BY st.study_uid, se.series_uid, i.instance_number, i.id",
                    tuple(chunk)):
                out.append(Holding(self.archive.files.absolute(r[0]), r[1], r[2], r[3]))
        return out


def move_contexts(holdings: list[Holding]) -> list:
    """Presentation contexts for the association to a move destination: each SOP class with
    its files' transfer syntax, uncompressed ones also offered as explicit/implicit VR LE."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for h in holdings:
        ts = UID(h.transfer_syntax_uid)
        if ts.is_compressed or ts.is_deflated:
            syntaxes: tuple[str, ...] = (str(ts),)
        else:
            syntaxes = tuple(dict.fromkeys([str(ts), ExplicitVRLittleEndian,
                                            ImplicitVRLittleEndian]))
        wanted[(h.sop_class_uid, syntaxes)] = None
    return [build_context(sop, list(ts)) for sop, ts in list(wanted)[:MAX_CONTEXTS]]


# -- the service --------------------------------------------------------------------------------

class QueryRetrieveSCP:
    """Contexts and handlers the listener adds to its AE (dicom/scp.py)."""

    def __init__(self, config, archive: Archive):
        self.config = config
        self.held = HeldIndex(archive, config.dicom.ae_title)
        self.archive = archive

    def add_contexts(self, ae) -> None:
        for sop in QR_CONTEXTS:
            ae.add_supported_context(sop, DEFAULT_TRANSFER_SYNTAXES)
        # C-GET sends over the caller's association, in the SCP role it proposes for each
        # storage class: accept whichever roles a requestor proposes.
        for cx in list(ae.supported_contexts):
            if cx.abstract_syntax not in QR_CONTEXTS and cx.abstract_syntax != "1.2.840.10008.1.1":
                ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax,
                                         scu_role=True, scp_role=True)

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_C_FIND, self._on_find), (evt.EVT_C_MOVE, self._on_move),
                (evt.EVT_C_GET, self._on_get)]

    def destination(self, ae_title: str) -> tuple[str, int] | None:
        """A move destination by AE title, from destinations: then remotes:."""
        for peer in [*self.config.destinations.values(), *self.config.remotes.values()]:
            if peer.ae_title == ae_title:
                return peer.host, peer.port
        return None

    def _record(self, kind: str, caller: str, detail: str) -> None:
        try:
            self.archive.index.record_event(kind, calling_ae=caller, detail=detail)
        except Exception:
            log.exception("could not record the %s event", kind)

    # C-FIND
    def _on_find(self, event) -> Iterator[tuple[int, Dataset | None]]:
        caller = event.assoc.requestor.ae_title
        try:
            ident = event.identifier
            level = str(ident.get("QueryRetrieveLevel", "") or "")
            n = 0
            for answer in self.held.find(ident):
                if event.is_cancelled:
                    yield CANCEL, None
                    return
                n += 1
                yield PENDING, answer
            log.info("C-FIND %s level from %s: %d match(es)", level, caller, n)
        except BadQuery as exc:
            log.warning("C-FIND from %s refused: %s", caller, exc)
            yield IDENTIFIER_MISMATCH, None
            return
        except Exception:
            log.exception("C-FIND from %s failed", caller)
            yield UNABLE_TO_PROCESS, None
            return
        yield SUCCESS, None

    def _selected(self, event, verb: str) -> list[Holding]:
        """The instances to send; a bad identifier raises, which pynetdicom answers with a
        failure status (unable to process) instead of a misleading success."""
        caller = event.assoc.requestor.ae_title
        try:
            return self.held.holdings(event.identifier)
        except BadQuery as exc:
            log.warning("%s from %s refused: %s", verb, caller, exc)
            raise

    # C-MOVE
    def _on_move(self, event) -> Iterator[Any]:
        caller = event.assoc.requestor.ae_title
        target = str(event.move_destination or "").strip()
        where = self.destination(target)
        if where is None:
            log.warning("C-MOVE from %s to unknown destination %r refused (not in the config's "
                        "destinations or remotes)", caller, target)
            self._record("move_refused", caller, f"unknown move destination {target!r}")
            yield None, None
            return
        holdings = self._selected(event, "C-MOVE")
        yield (*where, {"contexts": move_contexts(holdings)} if holdings else {})
        yield len(holdings)
        log.info("C-MOVE from %s: %d instance(s) to %s at %s:%d", caller, len(holdings), target,
                 *where)
        self._record("moved", caller, f"{len(holdings)} instance(s) to {target}")
        for h in holdings:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, h.read()

    # C-GET
    def _on_get(self, event) -> Iterator[Any]:
        caller = event.assoc.requestor.ae_title
        holdings = self._selected(event, "C-GET")
        yield len(holdings)
        log.info("C-GET from %s: %d instance(s)", caller, len(holdings))
        self._record("got", caller, f"{len(holdings)} instance(s)")
        for h in holdings:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, h.read()
