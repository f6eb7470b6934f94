"""Filing one instance: validate, write durably, index, and only then say success.

Every path into rtnode — the C-STORE listener, and later retrieval and import from disk — files
instances through ``Archive.file_instance`` so that they share one set of checks and one order of
operations. The outcome carries the DICOM status to answer with and a reason a person can read.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from rtnode import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from rtnode.config import Config
from rtnode.dicom.status import StoreStatus
from rtnode.dicom.uid import is_valid_uid
from rtnode.store.attributes import (
    PREAMBLE,
    IncompleteDataset,
    InstanceRecord,
    check_pixel_data,
    instance_record,
    parse_dataset,
)
from rtnode.store.files import FileStore, InvalidUID, Staged
from rtnode.store.index import Index

log = logging.getLogger("rtnode.store")

#: how often the out-of-space condition is logged at ERROR while it lasts
LOUD_EVERY_S = 30.0


class Refusal(Exception):
    """Why an instance is refused, with the C-STORE status that says so."""

    def __init__(self, status: StoreStatus, reason: str, sop_uid: str):
        super().__init__(reason)
        self.status, self.reason, self.sop_uid = status, reason, sop_uid


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one instance; ``status`` is the C-STORE status to send back."""

    status: int
    kind: str  # received | duplicate | replaced | rejected
    reason: str = ""
    sop_instance_uid: str = ""
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == StoreStatus.SUCCESS


class Archive:
    """The storage root: files under dicom/, partial writes under tmp/, the index beside them."""

    def __init__(self, root: Path, *, fsync: bool = True, min_free_gb: float = 0.0,
                 index_url: str = ""):
        self.root = Path(root)
        self.files = FileStore(self.root, fsync=fsync)
        # index.url (PostgreSQL) when set, else the embedded file beside the data
        self.index = Index(index_url or self.root / "index.sqlite", durable=fsync)
        self.min_free_bytes = int(min_free_gb * 1024**3)
        self._last_space_alarm = 0.0

    @classmethod
    def from_config(cls, config: Config) -> "Archive":
        return cls(config.storage_root, fsync=config.storage.fsync,
                   min_free_gb=config.storage.min_free_gb, index_url=config.index.url)

    def recover(self) -> int:
        """At start-up: drop partial writes of a previous run (none of them was acknowledged)."""
        n = self.files.clear_tmp()
        if n:
            log.warning("removed %d partial write(s) left in %s by an earlier stop", n,
                        self.files.tmp_dir)
        return n

    def close(self) -> None:
        self.index.close()

    # -- filing --------------------------------------------------------------------------------

    def _reject(self, status: int, reason: str, sop_uid: str,
                calling_ae: str) -> StoreOutcome:
        log.warning("refused instance %s from %s: 0x%04X %s", sop_uid or "?", calling_ae or "?",
                    status, reason)
        try:
            self.index.record_event("rejected", sop_instance_uid=sop_uid, calling_ae=calling_ae,
                                    status=int(status), detail=reason)
        except Exception:  # the refusal itself must still go out
            log.exception("could not record the refusal in the index")
        return StoreOutcome(int(status), "rejected", reason, sop_uid)

    def _space_ok(self) -> bool:
        if self.min_free_bytes <= 0:
            return True
        free = self.files.free_bytes()
        if free >= self.min_free_bytes:
            return True
        now = time.monotonic()
        if now - self._last_space_alarm > LOUD_EVERY_S:
            self._last_space_alarm = now
            log.error("STORAGE NEARLY FULL: %.2f GB free under %s, below storage.min_free_gb "
                      "(%.2f GB); refusing every store with 0xA700 until space is freed",
                      free / 1024**3, self.root, self.min_free_bytes / 1024**3)
        return False

    def file_instance(self, meta: FileMetaDataset, dataset: bytes, *, calling_ae: str = "",
                      called_ae: str = "", origin: str = "received",
                      expected_sop_uid: str | None = None) -> StoreOutcome:
        """File one encoded data set (as sent, in meta.TransferSyntaxUID) durably.

        An accepted instance is staged (written, hashed, fsync'd under tmp/), then published
        under its final name and indexed. Never raises for bad input: every problem becomes a failure outcome, logged
        and recorded as a 'rejected' event, so the listener answers and keeps serving.
        """
        sop_hint = str(expected_sop_uid or meta.get("MediaStorageSOPInstanceUID", "") or "")
        if not self._space_ok():
            return self._reject(StoreStatus.OUT_OF_RESOURCES,
                                "storage below storage.min_free_gb", sop_hint, calling_ae)
        try:
            head = self._file_head(meta, calling_ae)
            record = self._examine(meta, dataset, expected_sop_uid, sop_hint)
        except Refusal as refusal:
            return self._reject(refusal.status, refusal.reason, refusal.sop_uid, calling_ae)
        try:
            staged = self.files.stage(head, dataset, digest_of=1)
        except OSError as exc:
            return self._reject(StoreStatus.OUT_OF_RESOURCES, f"cannot write: {exc}",
                                record.sop_instance_uid, calling_ae)
        return self._publish(record, staged, str(meta.TransferSyntaxUID), calling_ae,
                             called_ae, origin)

    @staticmethod
    def _file_head(meta: FileMetaDataset, calling_ae: str) -> bytes:
        """Preamble + our File Meta Information (implementation and source AE filled in)."""
        try:
            meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
            meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
            if calling_ae:
                meta.SourceApplicationEntityTitle = calling_ae
            buf = BytesIO()
            write_file_meta_info(buf, meta, enforce_standard=True)
        except Exception as exc:
            sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
            raise Refusal(StoreStatus.CANNOT_UNDERSTAND, f"bad file meta: {exc}", sop) from None
        return PREAMBLE + buf.getvalue()

    def _examine(self, meta: FileMetaDataset, dataset: bytes,
                 expected_sop_uid: str | None, sop_hint: str) -> InstanceRecord:
        """Parse and judge an instance; raises Refusal with the status to answer."""
        try:
            ts = UID(str(meta.get("TransferSyntaxUID", "") or ""))
            plain = zlib.decompress(dataset, -zlib.MAX_WBITS) if ts.is_deflated else dataset
            header, pixel_bytes = parse_dataset(plain, ts.is_implicit_VR, ts.is_little_endian)
            check_pixel_data(header, pixel_bytes)
            record = instance_record(header)
        except IncompleteDataset as exc:
            raise Refusal(StoreStatus.CANNOT_UNDERSTAND, f"truncated: {exc}", sop_hint) from None
        except Exception as exc:  # anything pydicom cannot read is the sender's problem
            raise Refusal(StoreStatus.CANNOT_UNDERSTAND,
                          f"cannot parse data set: {type(exc).__name__}: {exc}", sop_hint) from None
        missing = [name for name, value in (("StudyInstanceUID", record.study_uid),
                                            ("SeriesInstanceUID", record.series_uid),
                                            ("SOPInstanceUID", record.sop_instance_uid))
                   if not value]
        if missing:
            raise Refusal(StoreStatus.DATASET_MISMATCH, "missing " + ", ".join(missing), sop_hint)
        sop_uid = record.sop_instance_uid
        try:
            self.files.path_for(record.study_uid, record.series_uid, sop_uid)
        except InvalidUID as exc:
            raise Refusal(StoreStatus.INVALID_UID, str(exc), sop_hint) from None
        if not is_valid_uid(record.sop_class_uid):
            raise Refusal(StoreStatus.INVALID_UID,
                          f"SOPClassUID {record.sop_class_uid!r} is not a valid UID", sop_uid)
        if expected_sop_uid and expected_sop_uid != sop_uid:
            raise Refusal(StoreStatus.UID_MISMATCH, f"data set SOPInstanceUID {sop_uid} differs "
                          f"from the request's {expected_sop_uid}", sop_uid)
        return record

    def _publish(self, record: InstanceRecord, staged: Staged, transfer_syntax_uid: str,
                 calling_ae: str, called_ae: str, origin: str) -> StoreOutcome:
        """Dedupe, rename into place, commit the index row: success exists only after this."""
        sop_uid = record.sop_instance_uid
        final = self.files.path_for(record.study_uid, record.series_uid, sop_uid)
        previous = self.index.stored_file(sop_uid)
        if previous is not None and previous.digest == staged.digest:
            self.files.discard(staged)
            self.index.record_event("duplicate", sop_instance_uid=sop_uid, calling_ae=calling_ae,
                                    status=0)
            log.info("duplicate %s from %s (identical bytes, kept once)", sop_uid, calling_ae)
            return StoreOutcome(0, "duplicate", "", sop_uid, self.files.absolute(previous.path))
        try:
            self.files.publish(staged, final)
            kind, replaced = self.index.record_instance(
                record, path=self.files.relative(final), size=staged.size, digest=staged.digest,
                transfer_syntax_uid=transfer_syntax_uid, calling_ae=calling_ae,
                called_ae=called_ae, origin=origin)
        except OSError as exc:
            return self._reject(StoreStatus.OUT_OF_RESOURCES, f"cannot write: {exc}", sop_uid,
                                calling_ae)
        if kind == "replaced":
            log.warning("instance %s from %s differs from the stored copy; kept the newest",
                        sop_uid, calling_ae)
            if replaced is not None and self.files.absolute(replaced.path) != final:
                self.files.absolute(replaced.path).unlink(missing_ok=True)
        return StoreOutcome(0, kind, "", sop_uid, final)
