"""Filing one instance: validate, write durably, index, and only then say success.

Every path into rtnode — the C-STORE listener, and later retrieval and import from disk — files
instances through ``Archive.file_instance`` so that they share one set of checks and one order of
operations. The outcome carries the DICOM status to answer with and a reason a person can read.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
import zlib
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Iterator

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
    uid_padding_problem,
)
from rtnode.store.files import FileStore, InvalidUID, Staged
from rtnode.store.index import Index

log = logging.getLogger("rtnode.store")

#: how often the out-of-space condition is logged at ERROR while it lasts
LOUD_EVERY_S = 30.0
#: filing of one SOP Instance UID is serialised through one of this many lock stripes
LOCK_STRIPES = 64
#: events kept in memory while the index cannot take them (then the oldest are dropped)
PENDING_EVENTS_MAX = 10000
#: after a failed index write, events wait this long before the next synchronous attempt
EVENT_RETRY_S = 5.0
VERIFICATION = "1.2.840.10008.1.1"
DEFAULT_MAX_INSTANCE = 512 * 1024 * 1024


#: File Meta elements the listener's requests carry (pynetdicom's create_file_meta), by VR
_META_VR = {0x00020000: "UL", 0x00020001: "OB", 0x00020002: "UI", 0x00020003: "UI",
            0x00020010: "UI", 0x00020012: "UI", 0x00020013: "SH", 0x00020016: "AE"}
_META_REQUIRED = (0x00020002, 0x00020003, 0x00020010)


def _meta_element(tag: int, vr: str, value: bytes) -> bytes:
    head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + vr.encode()
    if vr == "OB":
        return head + b"\0\0" + len(value).to_bytes(4, "little") + value
    return head + len(value).to_bytes(2, "little") + value


def plain_file_meta(meta: FileMetaDataset, calling_ae: str) -> bytes | None:
    """The File Meta Information group, encoded by hand, for the plain case every C-STORE
    brings: exactly the elements pynetdicom creates, ASCII text, single values. The bytes are
    those ``write_file_meta_info(enforce_standard=True)`` writes (a test compares them), at a
    tenth of its cost; anything else returns None and pydicom encodes it (and judges it)."""
    values: dict[int, object] = {}
    for elem in meta:
        if elem.tag not in _META_VR:
            return None
        values[int(elem.tag)] = elem.value
    values[0x00020012] = IMPLEMENTATION_CLASS_UID
    values[0x00020013] = IMPLEMENTATION_VERSION_NAME
    if calling_ae:
        values[0x00020016] = calling_ae
    if values.get(0x00020001, b"\0\1") != b"\0\1":
        return None
    body = [_meta_element(0x00020001, "OB", b"\0\1")]
    for tag in sorted(values):
        if tag in (0x00020000, 0x00020001):
            continue
        value = values[tag]
        if not isinstance(value, str) or not value.isascii() or "\\" in value:
            return None
        vr = _META_VR[tag]
        if vr == "UI" and (not value or value != value.strip(" \0")):
            return None
        if vr != "UI":
            value = value.strip(" ")
        raw = value.encode("ascii")
        if len(raw) % 2:
            raw += b"\0" if vr == "UI" else b" "
        body.append(_meta_element(tag, vr, raw))
    if any(not values.get(tag) for tag in _META_REQUIRED):
        return None
    group = b"".join(body)
    return _meta_element(0x00020000, "UL", len(group).to_bytes(4, "little")) + group


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
                 max_instance_bytes: int = DEFAULT_MAX_INSTANCE, reserve_bytes: int = 0,
                 index_url: str = ""):
        self.root = Path(root)
        self.files = FileStore(self.root, fsync=fsync)
        # index.url (PostgreSQL) when set, else the embedded file beside the data
        self.index = Index(index_url or self.root / "index.sqlite", durable=fsync)
        # below the reserve, too, stores are refused: the reserve is what lets the node keep its
        # index, queues and node.json going on a full disk
        self.min_free_bytes = max(int(min_free_gb * 1024**3), reserve_bytes)
        self.reserve_bytes = reserve_bytes
        self.max_instance_bytes = max_instance_bytes
        self._last_space_alarm = 0.0
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._lock_fds: list[int] | None = None
        self._events: deque[tuple[str, dict]] = deque(maxlen=PENDING_EVENTS_MAX)
        self._events_lock = threading.Lock()
        self._events_retry_at = 0.0

    @classmethod
    def from_config(cls, config: Config) -> "Archive":
        return cls(config.storage_root, fsync=config.storage.fsync,
                   min_free_gb=config.storage.min_free_gb,
                   max_instance_bytes=config.dicom.max_instance_bytes,
                   reserve_bytes=int(config.storage.reserve_mb * 1024 * 1024),
                   index_url=config.index.url)

    # -- serialising one SOP Instance UID ------------------------------------------------------

    def _lock_files(self) -> list[int]:
        """One lock file per stripe under locks/, opened once: flock also keeps another
        process filing into the same storage (an import) out of the same stripe."""
        if self._lock_fds is None:
            folder = self.root / "locks"
            folder.mkdir(exist_ok=True)
            self._lock_fds = [os.open(folder / f"{i:02d}", os.O_RDWR | os.O_CREAT, 0o644)
                              for i in range(LOCK_STRIPES)]
        return self._lock_fds

    @contextmanager
    def sop_lock(self, sop_uid: str) -> Iterator[None]:
        """Dedupe, publish and index of one SOP Instance UID happen one at a time, so that
        the index digest always describes the file on disk (two associations sending the same
        UID with different bytes would otherwise interleave rename and commit)."""
        stripe = zlib.crc32(sop_uid.encode()) % LOCK_STRIPES  # the same in every process
        with self._stripes[stripe]:
            try:
                fd = self._lock_files()[stripe]
            except OSError:
                fd = -1  # cannot create lock files (e.g. disk full): threads are still serialised
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fd >= 0:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    # -- events that must not be lost while the index is unwell ---------------------------------

    def record_event(self, kind: str, **fields) -> None:
        """Record an event; while the index cannot take writes (locked, full disk) events wait
        in memory and are written with the next one that succeeds, so that a refusal is never
        delayed by its own record."""
        with self._events_lock:
            self._events.append((kind, fields))
            if time.monotonic() < self._events_retry_at:
                return
            released = False
            while self._events:
                k, f = self._events[0]
                try:
                    self.index.record_event(k, **f)
                except Exception as exc:
                    if not released and "full" in str(exc).lower() and self.release_reserve():
                        released = True
                        continue
                    self._events_retry_at = time.monotonic() + EVENT_RETRY_S
                    log.error("cannot record %d event(s) in the index yet (%s); keeping them",
                              len(self._events), exc)
                    return
                self._events.popleft()

    def flush_events(self) -> int:
        """Write waiting events now (the node calls this with its heartbeat)."""
        with self._events_lock:
            self._events_retry_at = 0.0
        if self._events:
            self.record_event("events_flushed", detail="index writable again")
        return len(self._events)

    def recover(self) -> int:
        """At start-up: drop partial writes of a previous run (none of them was acknowledged)."""
        n = self.files.clear_tmp()
        if n:
            log.warning("removed %d partial write(s) left in %s by an earlier stop", n,
                        self.files.tmp_dir)
        return n

    def close(self) -> None:
        self.flush_events()
        self.index.close()
        for fd in self._lock_fds or []:
            os.close(fd)
        self._lock_fds = None

    # -- filing --------------------------------------------------------------------------------

    def _reject(self, status: int, reason: str, sop_uid: str,
                calling_ae: str) -> StoreOutcome:
        log.warning("refused instance %s from %s: 0x%04X %s", sop_uid or "?", calling_ae or "?",
                    status, reason)
        self.record_event("rejected", sop_instance_uid=sop_uid, calling_ae=calling_ae,
                          status=int(status), detail=reason)
        return StoreOutcome(int(status), "rejected", reason, sop_uid)

    def refuse(self, status: int, reason: str, sop_uid: str, calling_ae: str) -> StoreOutcome:
        """Log and record a refusal decided before filing (e.g. by the listener's guard)."""
        return self._reject(status, reason, sop_uid, calling_ae)

    def release_reserve(self) -> int:
        """Give the reserve back to the index and queues (the disk is full); stores stay
        refused until twice the reserve is free again and the node takes it back."""
        freed = self.files.release_reserve()
        if freed:
            log.error("STORAGE FULL: released the %d MB reserve under %s so that the index and "
                      "queues keep working; stores are refused until space is freed",
                      freed >> 20, self.root)
        return freed

    def _space_ok(self) -> bool:
        threshold = self.min_free_bytes
        if self.reserve_bytes and not self.files.reserve_path.exists():
            threshold = max(threshold, 2 * self.reserve_bytes)
        if threshold <= 0:
            return True
        free = self.files.free_bytes()
        if free >= threshold:
            return True
        now = time.monotonic()
        if now - self._last_space_alarm > LOUD_EVERY_S:
            self._last_space_alarm = now
            log.error("STORAGE NEARLY FULL: %.2f GB free under %s, below storage.min_free_gb "
                      "or storage.reserve_mb (%.2f GB); refusing every store with 0xA700 until "
                      "space is freed",
                      free / 1024**3, self.root, self.min_free_bytes / 1024**3)
        return False

    def file_instance(self, meta: FileMetaDataset, dataset: bytes, *, calling_ae: str = "",
                      called_ae: str = "", origin: str = "received",
                      expected_sop_uid: str | None = None,
                      expected_sop_class: str | None = None) -> StoreOutcome:
        """File one encoded data set (as sent, in meta.TransferSyntaxUID) durably.

        An accepted instance is staged (written, hashed, fsync'd under tmp/), then published
        under its final name and indexed. Never raises for bad input: every problem becomes a failure outcome, logged
        and recorded as a 'rejected' event, so the listener answers and keeps serving.
        """
        sop_hint = str(expected_sop_uid or meta.get("MediaStorageSOPInstanceUID", "") or "")
        if not self._space_ok():
            return self._reject(StoreStatus.OUT_OF_RESOURCES,
                                "storage full (below storage.min_free_gb/reserve_mb)", sop_hint,
                                calling_ae)
        try:
            head = self._file_head(meta, calling_ae)
            record = self._examine(meta, dataset, expected_sop_uid, sop_hint, expected_sop_class)
        except Refusal as refusal:
            return self._reject(refusal.status, refusal.reason, refusal.sop_uid, calling_ae)
        # staging on another thread while this one parses was measured: with pynetdicom's
        # threads holding the GIL, the hand-overs cost what the overlap saved
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
        fast = plain_file_meta(meta, calling_ae)
        if fast is not None:
            return PREAMBLE + fast
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

    def _check_size(self, dataset: bytes, sop_hint: str) -> None:
        """Refuse an empty data set, or one over the instance limit, before anything is written."""
        if len(dataset) > self.max_instance_bytes:
            raise Refusal(StoreStatus.OUT_OF_RESOURCES, "instance over dicom.max_instance_mb "
                          f"({self.max_instance_bytes >> 20} MB)", sop_hint)
        if not dataset:
            raise Refusal(StoreStatus.CANNOT_UNDERSTAND, "empty data set", sop_hint)

    def _inflate(self, dataset: bytes, sop_hint: str) -> bytes:
        """A deflated data set, inflated no further than the instance limit (a 1 MB bomb
        would otherwise become gigabytes in memory)."""
        # first measure, 1 MB at a time, keeping nothing: zlib's one-shot output would hold
        # the limit twice over (its blocks and the joined result) before we could judge it
        d = zlib.decompressobj(-zlib.MAX_WBITS)
        total, chunk, tail = 0, 1 << 20, dataset
        while tail:
            total += len(d.decompress(tail, chunk))
            tail = d.unconsumed_tail
            if total > self.max_instance_bytes:
                raise Refusal(StoreStatus.OUT_OF_RESOURCES, "inflates beyond dicom.max_instance_mb "
                              f"({self.max_instance_bytes >> 20} MB)", sop_hint)
            if d.eof:
                break
        return zlib.decompress(dataset, -zlib.MAX_WBITS)

    def _examine(self, meta: FileMetaDataset, dataset: bytes,
                 expected_sop_uid: str | None, sop_hint: str,
                 expected_sop_class: str | None = None) -> InstanceRecord:
        """Parse and judge an instance; raises Refusal with the status to answer."""
        self._check_size(dataset, sop_hint)
        try:
            ts = UID(str(meta.get("TransferSyntaxUID", "") or ""))
            plain = self._inflate(dataset, sop_hint) if ts.is_deflated else dataset
            header, pixel_bytes = parse_dataset(plain, ts.is_implicit_VR, ts.is_little_endian)
            check_pixel_data(header, pixel_bytes)
            padding = uid_padding_problem(header)
            record = instance_record(header)
        except Refusal:
            raise
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
        if padding:
            raise Refusal(StoreStatus.INVALID_UID, padding, sop_hint)
        try:
            self.files.path_for(record.study_uid, record.series_uid, sop_uid)
        except InvalidUID as exc:
            raise Refusal(StoreStatus.INVALID_UID, str(exc), sop_hint) from None
        if not is_valid_uid(record.sop_class_uid):
            raise Refusal(StoreStatus.INVALID_UID,
                          f"SOPClassUID {record.sop_class_uid!r} is not a valid UID", sop_uid)
        if record.sop_class_uid == VERIFICATION:
            raise Refusal(StoreStatus.DATASET_MISMATCH, "data set SOP class is Verification",
                          sop_uid)
        if expected_sop_class and expected_sop_class != record.sop_class_uid:
            raise Refusal(StoreStatus.DATASET_MISMATCH,
                          f"data set SOP class {record.sop_class_uid} is not the request's "
                          f"{expected_sop_class}", sop_uid)
        if expected_sop_uid and expected_sop_uid != sop_uid:
            raise Refusal(StoreStatus.UID_MISMATCH, f"data set SOPInstanceUID {sop_uid} differs "
                          f"from the request's {expected_sop_uid}", sop_uid)
        return record

    def _publish(self, record: InstanceRecord, staged: Staged, transfer_syntax_uid: str,
                 calling_ae: str, called_ae: str, origin: str) -> StoreOutcome:
        """Dedupe, rename into place, commit the index row: success exists only after this.

        Runs under the SOP Instance UID's lock. When the index commit fails (locked, full, a
        value SQLite cannot hold) the rename is undone — the previous file restored, or the new
        one removed — so that nothing lies under dicom/ that the index does not describe.
        """
        sop_uid = record.sop_instance_uid
        final = self.files.path_for(record.study_uid, record.series_uid, sop_uid)
        with self.sop_lock(sop_uid):
            try:
                previous = self.index.stored_file(sop_uid)
            except Exception as exc:
                self.files.discard(staged)
                return self._reject(StoreStatus.OUT_OF_RESOURCES, f"index: {exc}", sop_uid,
                                    calling_ae)
            if previous is not None and previous.digest == staged.digest \
                    and self.files.absolute(previous.path).exists():
                self.files.discard(staged)
                self.record_event("duplicate", sop_instance_uid=sop_uid, calling_ae=calling_ae,
                                  status=0)
                log.info("duplicate %s from %s (identical bytes, kept once)", sop_uid,
                         calling_ae)
                return StoreOutcome(0, "duplicate", "", sop_uid,
                                    self.files.absolute(previous.path))
            keep: Path | None = None
            try:
                if final.exists():  # a replacement: keep the old bytes until the commit
                    keep = self.files.tmp_dir / f"{uuid.uuid4().hex}.keep"
                    os.link(final, keep)
                self.files.publish(staged, final)
            except OSError as exc:
                self.files.discard(staged)
                if keep is not None:
                    keep.unlink(missing_ok=True)
                return self._reject(StoreStatus.OUT_OF_RESOURCES, f"cannot write: {exc}",
                                    sop_uid, calling_ae)
            try:
                kind, replaced = self.index.record_instance(
                    record, path=self.files.relative(final), size=staged.size,
                    digest=staged.digest, transfer_syntax_uid=transfer_syntax_uid,
                    calling_ae=calling_ae, called_ae=called_ae, origin=origin)
            except Exception as exc:
                self._undo_publish(final, keep)
                return self._reject(StoreStatus.OUT_OF_RESOURCES,
                                    f"index: {type(exc).__name__}: {exc}", sop_uid, calling_ae)
            if keep is not None:
                keep.unlink(missing_ok=True)
            if kind == "replaced":
                log.warning("instance %s from %s differs from the stored copy; kept the newest",
                            sop_uid, calling_ae)
                if replaced is not None and self.files.absolute(replaced.path) != final:
                    self.files.absolute(replaced.path).unlink(missing_ok=True)
        return StoreOutcome(0, kind, "", sop_uid, final)

    def _undo_publish(self, final: Path, keep: Path | None) -> None:
        try:
            if keep is not None:
                os.replace(keep, final)
            else:
                final.unlink(missing_ok=True)
        except OSError:
            log.exception("could not undo the publication of %s; `rtnode verify --repair` "
                          "will reconcile it", final)

    # -- reconciling files the index does not know (rtnode verify) ------------------------------

    def adopt(self, path: Path) -> StoreOutcome:
        """Index a file already under dicom/ that the index does not know (an orphan left by a
        stop between rename and commit), after the same checks a received instance passes.
        The file must sit at the path its UIDs give; anything else is refused."""
        from rtnode.store.part10 import NotPart10, split_part10
        try:
            meta, dataset = split_part10(path.read_bytes())
        except (OSError, NotPart10) as exc:
            return StoreOutcome(int(StoreStatus.CANNOT_UNDERSTAND), "rejected", str(exc))
        try:
            record = self._examine(meta, dataset, None, "")
        except Refusal as refusal:
            return StoreOutcome(int(refusal.status), "rejected", refusal.reason, refusal.sop_uid)
        sop_uid = record.sop_instance_uid
        final = self.files.path_for(record.study_uid, record.series_uid, sop_uid)
        if final != path:
            return StoreOutcome(int(StoreStatus.DATASET_MISMATCH), "rejected",
                                f"file is not at its UIDs' path {self.files.relative(final)}",
                                sop_uid)
        import hashlib
        digest = hashlib.sha256(dataset).hexdigest()
        with self.sop_lock(sop_uid):
            previous = self.index.stored_file(sop_uid)
            if previous is not None and self.files.absolute(previous.path) == path:
                return StoreOutcome(0, "duplicate", "", sop_uid, path)  # indexed meanwhile
            kind, _ = self.index.record_instance(
                record, path=self.files.relative(path), size=path.stat().st_size, digest=digest,
                transfer_syntax_uid=str(meta.TransferSyntaxUID),
                calling_ae=str(meta.get("SourceApplicationEntityTitle", "") or ""),
                origin="adopted")
        return StoreOutcome(0, kind, "", sop_uid, path)
