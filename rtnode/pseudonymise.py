"""Stable keyed pseudonyms for cohort exports (``rtnode export --pseudonymise``).

Each identifier is replaced by an HMAC-SHA256 of it under the site's secret key
(``export.pseudonym_key``): the same patient gets the same pseudonym in every export made with
the same key — so cohorts exported months apart still join — and nobody without the key can
compute or reverse one. PatientIDs become ``P`` + 12 base32 characters, names the patient's
pseudonym, UIDs ``2.25.<128-bit decimal>`` (a valid UID), and dates are shifted by a keyed
number of days per patient (−365…+365), which keeps the intervals within one patient.

The way back lives only in the mapping file (CSV: kind, pseudonym, original), written with mode
0600 and kept apart from the export (by default under the storage root), merged across exports.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

MIN_KEY_LENGTH = 16
SHIFT_DAYS = 365


class PseudonymError(ValueError):
    """No usable key, or a mapping file that cannot be written safely."""


class Pseudonymiser:
    def __init__(self, key: str | None):
        if not key or len(key) < MIN_KEY_LENGTH:
            raise PseudonymError(
                f"pseudonymising needs export.pseudonym_key (at least {MIN_KEY_LENGTH} "
                "characters; keep it secret, e.g. RTNODE_EXPORT__PSEUDONYM_KEY in the service "
                "environment)")
        self._key = key.encode("utf-8")
        self.mapping: dict[tuple[str, str], str] = {}  # (kind, pseudonym) -> original

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\x00{value}".encode("utf-8"), hashlib.sha256).digest()

    def _keep(self, kind: str, pseudonym: str, original: str) -> str:
        self.mapping[(kind, pseudonym)] = original
        return pseudonym

    def patient_id(self, value: str) -> str:
        code = base64.b32encode(self._digest("patient", value)).decode("ascii")[:12]
        return self._keep("patient_id", f"P{code}", value)

    def name(self, value: str, patient_id: str) -> str:
        return self._keep("patient_name", f"Patient^{self.patient_id(patient_id)}", value)

    def uid(self, value: str) -> str:
        number = int.from_bytes(self._digest("uid", value)[:16], "big")
        return self._keep("uid", f"2.25.{number}", value)

    def date(self, value: str, patient_id: str) -> str:
        """YYYYMMDD shifted by this patient's keyed offset; anything else is dropped."""
        try:
            day = dt.datetime.strptime(value, "%Y%m%d").date()
        except ValueError:
            return ""
        offset = int.from_bytes(self._digest("shift", patient_id)[:4], "big") \
            % (2 * SHIFT_DAYS + 1) - SHIFT_DAYS
        return self._keep("date", (day + dt.timedelta(days=offset)).strftime("%Y%m%d"), value)

    # -- tables --------------------------------------------------------------------------------

    def replacements(self, identity: dict[str, Any]) -> dict[str, str]:
        """original -> pseudonym for everything that identifies one course's patient."""
        pid = identity["patient_id"]
        out: dict[str, str] = {pid: self.patient_id(pid)}
        if identity.get("patient_name"):
            out[identity["patient_name"]] = self.name(identity["patient_name"], pid)
        for d in identity.get("dates", []):
            if d:
                out[d] = self.date(d, pid) or "00000000"
        for u in identity.get("uids", []):
            if u:
                out[u] = self.uid(u)
        return out

    def frame(self, frame, replacements: dict[str, str]):
        """Every identifier in any text cell (alone or inside a longer value such as a
        ';'-joined UID list) replaced; numbers untouched."""
        if not replacements:
            return frame
        pattern = re.compile(r"(?<![0-9A-Za-z.^])(" + "|".join(
            re.escape(k) for k in sorted(replacements, key=len, reverse=True))
            + r")(?![0-9A-Za-z.^])")

        def swap(value: Any) -> Any:
            if isinstance(value, str):
                return pattern.sub(lambda m: replacements[m.group(1)], value)
            return value

        from pandas.api.types import is_object_dtype, is_string_dtype

        frame = frame.copy()
        for col in frame.columns:
            if is_object_dtype(frame[col]) or is_string_dtype(frame[col]):
                frame[col] = frame[col].map(swap)
        return frame

    # -- the mapping file ----------------------------------------------------------------------

    def write_mapping(self, path: Path) -> Path:
        """Merge this run's pairs into the mapping file, readable by its owner only (0600)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        rows = dict(self.mapping)
        if path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    rows.setdefault((r["kind"], r["pseudonym"]), r["original"])
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["kind", "pseudonym", "original"])
            for (kind, pseudonym), original in sorted(rows.items()):
                w.writerow([kind, pseudonym, original])
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path


def course_identity(index, course_id: int, patient_id: str,
                    members_json: Iterable[str]) -> dict[str, Any]:
    """The identifiers of one course: its patient's name, birth and study dates, and every UID
    of its members (SOP instance, series, study, frame of reference)."""
    uids: set[str] = set()
    for text in members_json:
        for m in json.loads(text or "[]"):
            uids |= {m.get("sop_instance_uid", ""), m.get("series_uid", ""),
                     m.get("study_uid", ""), m.get("frame_of_reference_uid", "")}
    rows = index.query("SELECT name, birth_date FROM patients WHERE patient_id=?", (patient_id,))
    name, birth = (rows[0][0], rows[0][1]) if rows else ("", "")
    dates = [birth] + [r[0] for r in index.query(
        "SELECT st.study_date FROM studies st JOIN patients p ON st.patient_fk = p.id"
        " WHERE p.patient_id=?", (patient_id,))]
    return {"course_id": course_id, "patient_id": patient_id, "patient_name": name,
            "dates": sorted({d for d in dates if d}), "uids": sorted(uids - {""})}
