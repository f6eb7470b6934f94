"""Filing rtnode's own outputs (the auto RTSTRUCT) as instances of the course's study.

They go through ``Archive.file_instance`` like anything received — same checks, same durable
write, an index row — with origin ``derived``, so that Query/Retrieve (dicom/qrscp.py) offers
them beside the images they were made from. Course building ignores derived instances: an
output must never become an input that makes a new revision of its own course.
"""

from __future__ import annotations

from pathlib import Path

from rtnode.store.archive import Archive, StoreOutcome
from rtnode.store.part10 import split_part10

DERIVED = "derived"


class FilingFailed(RuntimeError):
    """The archive refused an output; the reason is its refusal."""


def file_derived(config, path: Path) -> StoreOutcome:
    meta, dataset = split_part10(Path(path).read_bytes())
    # Outputs are small and are what the node was asked for: the min_free_gb guard is for
    # what senders may retry, not for this.
    archive = Archive(config.storage_root, fsync=config.storage.fsync, min_free_gb=0.0,
                      index_url=config.index.url)
    try:
        outcome = archive.file_instance(meta, dataset, calling_ae=config.dicom.ae_title,
                                        called_ae=config.dicom.ae_title, origin=DERIVED)
        if outcome.ok:
            # an output is not something a peer sent: its event says so
            with archive.index.transaction() as c:
                c.execute("UPDATE events SET kind=? WHERE sop_instance_uid=? AND kind IN"
                          " ('received', 'replaced')", (DERIVED, outcome.sop_instance_uid))
    finally:
        archive.close()
    if not outcome.ok:
        raise FilingFailed(f"the archive refused {Path(path).name}: {outcome.reason}")
    return outcome


def held_counts(index) -> dict[str, int]:
    """What the node holds as received: patients, studies, series and instances without
    rtnode's own outputs (counted apart as ``derived``)."""
    counts = index.counts()
    derived = int(index.query("SELECT COUNT(*) FROM instances WHERE origin=?", (DERIVED,))[0][0])
    if derived:
        counts["instances"] -= derived
        counts["series"] = int(index.query(
            "SELECT COUNT(*) FROM series se WHERE EXISTS (SELECT 1 FROM instances i"
            " WHERE i.series_fk = se.id AND i.origin != ?)", (DERIVED,))[0][0])
    counts["derived"] = derived
    return counts
