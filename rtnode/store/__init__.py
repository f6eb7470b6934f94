"""Storage: durable files under storage/dicom and the SQLite index beside them."""

from rtnode.store.archive import Archive, StoreOutcome

__all__ = ["Archive", "StoreOutcome"]
