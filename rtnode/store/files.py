"""Durable file writes: temp file on the same filesystem, fsync, atomic rename, fsync the folder.

The order is the no-loss promise in miniature. A reader (or a restart after kill -9) sees either
no file or the whole file under its final name, never a partial one; and once ``write`` returns,
the file and its directory entry survive a power cut.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from rtnode.dicom.uid import is_valid_uid


@dataclass(frozen=True)
class Staged:
    """A complete, fsync'd file under tmp/ waiting to be published (or discarded)."""

    path: Path
    size: int
    digest: str


#: the reserve file under the storage root (see hold_reserve)
RESERVE_FILE = "reserve"
#: folders whose fsync state is remembered (then forgotten: at worst one fsync more)
FOLDER_STATES = 4096


class _FolderSync:
    """Renames done into one folder, and how many of them an fsync of it has covered.

    A folder fsync makes durable every rename that completed before it started; a thread whose
    rename an fsync started after already covers needs none of its own. With several
    associations filing into one series folder, one fsync then stands for a batch of renames.
    """

    __slots__ = ("lock", "renamed", "synced")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.renamed = 0
        self.synced = 0


class InvalidUID(ValueError):
    """A UID that would name a file breaks the DICOM UID grammar."""


class FileStore:
    """storage/dicom/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm, written through storage/tmp."""

    def __init__(self, root: Path, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync
        self.dicom_dir = self.root / "dicom"
        self.tmp_dir = self.root / "tmp"
        for d in (self.root, self.dicom_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._folders: dict[Path, _FolderSync] = {}
        self._folders_lock = threading.Lock()

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """The final path; every UID is checked first because it becomes a path component."""
        for name, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid),
                          ("SOPInstanceUID", sop_instance_uid)):
            if not is_valid_uid(uid):
                raise InvalidUID(f"{name} {uid!r} is not a valid UID")
        return self.dicom_dir / study_uid / series_uid / f"{sop_instance_uid}.dcm"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ensure_dir(self, folder: Path) -> None:
        """Create folder and make each new directory entry durable in its parent."""
        if folder.is_dir():
            return
        missing = []
        p = folder
        while not p.is_dir():
            missing.append(p)
            p = p.parent
        folder.mkdir(parents=True, exist_ok=True)
        if self.fsync:
            for created in reversed(missing):
                self._fsync_dir(created.parent)

    def stage(self, *chunks: bytes, digest_of: int | None = None) -> Staged:
        """Write chunks to a new file under tmp/ and fsync it; nothing is visible yet.

        ``digest_of`` names the chunk whose SHA-256 is computed while the data is at hand. The
        work here releases the GIL (write, hash, fsync), so a caller can stage on an I/O thread
        while it parses the same bytes.
        """
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    size += n
            digest = hashlib.sha256(chunks[digest_of]).hexdigest() if digest_of is not None \
                else ""
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return Staged(tmp, size, digest)

    def publish(self, staged: Staged, final: Path) -> None:
        """Rename a staged file to its final name and make the rename durable."""
        self._ensure_dir(final.parent)
        folder = self._folder_state(final.parent)
        try:
            os.replace(staged.path, final)
        except BaseException:
            self.discard(staged)
            raise
        with self._folders_lock:
            folder.renamed += 1
            ticket = folder.renamed
        if self.fsync:
            self._sync_renames(final.parent, folder, ticket)

    def _folder_state(self, folder: Path) -> _FolderSync:
        with self._folders_lock:
            state = self._folders.get(folder)
            if state is None:
                if len(self._folders) >= FOLDER_STATES:
                    self._folders.clear()  # holders keep their object; a new one only syncs more
                state = self._folders[folder] = _FolderSync()
            return state

    def _sync_renames(self, path: Path, folder: _FolderSync, ticket: int) -> None:
        """Return once an fsync of the folder that started after rename number ``ticket``
        has completed: our own, or one another thread ran meanwhile (group fsync)."""
        with folder.lock:
            if folder.synced >= ticket:
                return  # an fsync that began after our rename has finished: it covered it
            with self._folders_lock:
                upto = folder.renamed  # every one of these renames completed before this fsync
            self._fsync_dir(path)
            folder.synced = upto

    @staticmethod
    def discard(staged: Staged) -> None:
        staged.path.unlink(missing_ok=True)

    def write(self, final: Path, *chunks: bytes) -> int:
        """Write chunks to final atomically and durably; returns the byte count."""
        staged = self.stage(*chunks)
        self.publish(staged, final)
        return staged.size

    def clear_tmp(self) -> int:
        """Remove partial writes left by a crash; they were never acknowledged."""
        n = 0
        for p in self.tmp_dir.iterdir():
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
        return n

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    # -- the reserve: space held back for a full disk ---------------------------------------

    @property
    def reserve_path(self) -> Path:
        return self.root / RESERVE_FILE

    def hold_reserve(self, size: int) -> bool:
        """Create the reserve file (size bytes, really allocated) when it is missing and there
        is room for it and as much again; True when it exists afterwards."""
        path = self.reserve_path
        if size <= 0:
            return False
        if path.exists():
            return True
        if self.free_bytes() < 2 * size:
            return False
        tmp = self.tmp_dir / "reserve.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        return True

    def release_reserve(self) -> int:
        """Delete the reserve; returns the bytes freed."""
        try:
            size = self.reserve_path.stat().st_size
            self.reserve_path.unlink()
        except FileNotFoundError:
            return 0
        return size
