"""rtnode: a DICOM node for radiotherapy departments."""

__version__ = "0.1.0"

#: (0002,0012) written into every file rtnode writes (derived once from pydicom's UID root)
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.74933629722976109391298481085044949864"
#: (0002,0013), at most 16 characters
IMPLEMENTATION_VERSION_NAME = f"RTNODE_{__version__}"
