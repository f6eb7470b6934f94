"""C-STORE response statuses rtnode answers with, and why each was chosen (PS3.4 Annex B.2.3)."""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    SUCCESS = 0x0000
    #: Refused: SOP Class not supported — a C-STORE of Verification or of a class that differs
    #: from its presentation context.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: Refused: Out of Resources — disk below storage.min_free_gb, the write or the index commit
    #: failed, or the instance is larger than dicom.max_instance_mb.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class — a required UID (Study/Series/SOP) is missing.
    DATASET_MISMATCH = 0xA900
    #: Error: Cannot understand — the data set could not be parsed (e.g. truncated).
    CANNOT_UNDERSTAND = 0xC000
    #: Error (Cannot understand range, rtnode-specific): a UID breaks the UID grammar.
    INVALID_UID = 0xC001
    #: Error (Cannot understand range, rtnode-specific): SOP Instance UID in the data set differs
    #: from the Affected SOP Instance UID of the request.
    UID_MISMATCH = 0xC002
