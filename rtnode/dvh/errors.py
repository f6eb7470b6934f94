"""The one exception the DVH engine raises for input a physicist has to fix."""

from __future__ import annotations


class DVHInputError(ValueError):
    """RTSTRUCT/RTDOSE/RTPLAN content that makes a DVH impossible or meaningless.

    The message names the objects and attributes involved so that the fix (re-export the dose,
    pick the right structure set, give a prescription) is obvious without reading code.
    """
