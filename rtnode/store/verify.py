"""Index against disk: orphans, missing files, sizes and (optionally) SHA-256 digests.

A kill -9 between the rename into dicom/ and the index commit leaves a whole file the index does
not know (an *orphan*: never acknowledged, so the sender will resend it; but until then it is
invisible). The cheap part — a walk of dicom/ against the index's paths and sizes — runs at
every start-up and adopts orphans; ``rtnode verify`` also re-hashes every data set, and
``--repair`` adopts orphans (indexing those that pass the receive checks, moving the others to
quarantine/) and drops the rows of files that are gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from rtnode.store.part10 import NotPart10, split_part10

log = logging.getLogger("rtnode.store")


@dataclass
class VerifyReport:
    """What ``verify`` found (paths relative to the storage root) and what it repaired."""

    indexed: int = 0
    files: int = 0
    orphans: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    digest_mismatch: list[str] = field(default_factory=list)
    hashed: bool = False
    adopted: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    dropped_rows: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Index and disk agree (after repairs)."""
        orphans_left = set(self.orphans) - set(self.adopted) - set(self.quarantined)
        missing_left = set(self.missing) - set(self.dropped_rows)
        return not (orphans_left or missing_left or self.size_mismatch or self.digest_mismatch)

    def to_json_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        return (f"{self.indexed} indexed, {self.files} files: {len(self.orphans)} orphan(s), "
                f"{len(self.missing)} missing, {len(self.size_mismatch)} size mismatch(es)"
                + (f", {len(self.digest_mismatch)} digest mismatch(es)" if self.hashed
                   else " (digests not checked)")
                + (f"; adopted {len(self.adopted)}, quarantined {len(self.quarantined)}, "
                   f"dropped {len(self.dropped_rows)} row(s)"
                   if self.adopted or self.quarantined or self.dropped_rows else ""))


def walk_files(folder: Path) -> Iterator[Path]:
    """Every regular file under folder (os.scandir: no stat per entry beyond the type)."""
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.is_file(follow_symlinks=False):
                yield Path(e.path)


def dataset_digest(path: Path) -> str:
    """SHA-256 of the data set bytes (what the index's digest describes: not the meta)."""
    return hashlib.sha256(split_part10(path.read_bytes())[1]).hexdigest()


def verify(archive, *, hash_files: bool = True, repair: bool = False,
           drop_missing: bool = True) -> VerifyReport:
    """Compare the index with dicom/; with repair, adopt orphans and (unless drop_missing is
    False, as at start-up) drop the rows of files that are gone.

    ``archive`` is a store.archive.Archive (its index, file store and adopt()).
    """
    root = archive.root
    rows = archive.index.query("SELECT sop_instance_uid, path, size, digest FROM instances")
    indexed = {r["path"]: r for r in rows}
    report = VerifyReport(indexed=len(indexed), hashed=hash_files)
    on_disk: set[str] = set()
    for f in walk_files(archive.files.dicom_dir):
        rel = f.relative_to(root).as_posix()
        on_disk.add(rel)
        row = indexed.get(rel)
        if row is None:
            report.orphans.append(rel)
            continue
        try:
            if f.stat().st_size != row["size"]:
                report.size_mismatch.append(rel)
            elif hash_files and dataset_digest(f) != row["digest"]:
                report.digest_mismatch.append(rel)
        except (OSError, NotPart10):
            report.digest_mismatch.append(rel)
    report.files = len(on_disk)
    report.missing = sorted(set(indexed) - on_disk)
    report.orphans.sort()
    if repair:
        _repair(archive, report, indexed, drop_missing)
    return report


def _repair(archive, report: VerifyReport, indexed: dict, drop_missing: bool) -> None:
    root = archive.root
    for rel in list(report.orphans):
        path = root / rel
        if not path.exists():
            continue
        outcome = archive.adopt(path)
        if outcome.ok and outcome.kind == "duplicate":
            # filed by a store still in flight when the walk saw it: never an orphan
            report.orphans.remove(rel)
            continue
        if outcome.ok:
            report.adopted.append(rel)
            archive.record_event("adopted", sop_instance_uid=outcome.sop_instance_uid,
                                 detail=rel)
            log.warning("adopted orphan %s into the index", rel)
        else:
            target = root / "quarantine" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
            report.quarantined.append(rel)
            archive.record_event("quarantined", sop_instance_uid=outcome.sop_instance_uid,
                                 status=outcome.status, detail=f"{rel}: {outcome.reason}")
            log.warning("moved orphan %s to quarantine/: %s", rel, outcome.reason)
    for rel in report.missing if drop_missing else ():
        if (root / rel).exists():
            continue
        uid = indexed[rel]["sop_instance_uid"]
        with archive.index.transaction() as c:
            c.execute("DELETE FROM instances WHERE sop_instance_uid=? AND path=?", (uid, rel))
        report.dropped_rows.append(rel)
        archive.record_event("lost", sop_instance_uid=uid, detail=f"{rel} missing; row dropped")
        log.error("file %s of instance %s is missing; dropped its index row", rel, uid)
