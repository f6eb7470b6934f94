"""``rtnode import``: DICOM files already on disk, filed exactly like received instances.

Every file goes through ``Archive.file_instance`` — same UID checks, truncation checks, dedupe
and index rows as a C-STORE — so importing the same folder twice adds nothing, and whatever the
node would refuse on the network is refused here with the same reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

from rtnode.store.archive import Archive
from rtnode.store.part10 import NotPart10, split_part10


def dicom_candidates(root: Path, recursive: bool) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    pattern = "**/*" if recursive else "*"
    for path in sorted(root.glob(pattern)):
        if path.is_file():
            yield path


def skipped_folders(root: Path) -> int:
    """Subfolders a non-recursive import of root did not look into."""
    root = Path(root)
    return sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 0


def import_path(archive: Archive, root: Path, *, recursive: bool = False,
                cohort: bool = False,
                progress: Callable[[Path, str], None] | None = None) -> Counter:
    """File every DICOM file under root; returns counts by outcome (received, duplicate,
    replaced, rejected, not_dicom)."""
    origin = "cohort" if cohort else "imported"
    counts: Counter = Counter()
    for path in dicom_candidates(Path(root), recursive):
        try:
            meta, dataset = split_part10(path.read_bytes())
        except (NotPart10, OSError):
            kind = "not_dicom"
        else:
            outcome = archive.file_instance(meta, dataset, calling_ae="", origin=origin)
            kind = outcome.kind
        counts[kind] += 1
        if progress:
            progress(path, kind)
    return counts
