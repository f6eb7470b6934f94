"""rtnode: a DICOM node for radiotherapy departments."""

__version__ = "0.1.0"
