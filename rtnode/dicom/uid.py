"""The DICOM UID grammar (PS3.5 §9.1), checked before a UID is allowed to name a file."""

from __future__ import annotations

import re

# Components are digits, separated by single dots; no leading zero unless the component is "0";
# at most 64 characters. That also rules out "..", "/" and every other path trick.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
MAX_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True when value is a well-formed UID; trailing NUL/space padding is not accepted here."""
    return isinstance(value, str) and len(value) <= MAX_LENGTH and bool(_UID.match(value))
