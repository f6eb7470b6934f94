"""Part 10 files as (file meta, encoded data set) — the same two pieces a C-STORE carries.

Splitting a file this way lets a file read from disk go through exactly the filing path of a
received instance, and lets tests compare what was stored with what was sent, byte for byte.
"""

from __future__ import annotations

import io

from pydicom.dataset import FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble


class NotPart10(ValueError):
    """No 'DICM' prefix or no readable file meta information."""


def split_part10(blob: bytes) -> tuple[FileMetaDataset, bytes]:
    fp = io.BytesIO(blob)
    try:
        if read_preamble(fp, force=False) is None:
            raise NotPart10("no DICM prefix")
        meta = _read_file_meta_info(fp)
    except NotPart10:
        raise
    except Exception as exc:
        raise NotPart10(f"unreadable file meta information: {exc}") from None
    if "TransferSyntaxUID" not in meta:
        raise NotPart10("file meta information has no TransferSyntaxUID")
    return meta, blob[fp.tell():]
