"""What the index keeps of an instance: identity, hierarchy, geometry and references.

Read from the encoded bytes with pixel data skipped and large values left unconverted, so the
hot path never decodes an image. The references kept here (RTSTRUCT → CT slices and series,
RTPLAN → RTSTRUCT, RTDOSE → RTPLAN, REG → frames of reference) are exactly what course building
needs, so it never has to reopen a file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.multival import MultiValue
from pydicom.uid import UID

PREAMBLE = b"\x00" * 128 + b"DICM"
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010

#: single-valued attributes copied into the instance's JSON ``attrs`` when present
INSTANCE_ATTRS = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "Rows", "Columns", "NumberOfFrames", "AcquisitionNumber", "PatientPosition", "ImageType",
    "DoseSummationType", "DoseType", "DoseUnits", "RTPlanLabel", "RTPlanName", "RTPlanDate",
    "ApprovalStatus", "StructureSetLabel", "StructureSetDate", "ContentDate", "ContentTime",
    "Manufacturer", "StationName", "ManufacturerModelName",
)

#: (kind, path of sequence keywords, UID keyword) — where each kind of reference lives
REFERENCE_PATHS: dict[str, tuple[tuple[str, tuple[str, ...], str], ...]] = {
    "RTSTRUCT": (
        ("frame_of_reference", ("ReferencedFrameOfReferenceSequence",), "FrameOfReferenceUID"),
        ("study", ("ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence"),
         "ReferencedSOPInstanceUID"),
        ("series", ("ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence",
                    "RTReferencedSeriesSequence"), "SeriesInstanceUID"),
        ("image", ("ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence",
                   "RTReferencedSeriesSequence", "ContourImageSequence"),
         "ReferencedSOPInstanceUID"),
        ("image", ("ROIContourSequence", "ContourSequence", "ContourImageSequence"),
         "ReferencedSOPInstanceUID"),
    ),
    "RTPLAN": (
        ("rtstruct", ("ReferencedStructureSetSequence",), "ReferencedSOPInstanceUID"),
        ("rtdose", ("ReferencedDoseSequence",), "ReferencedSOPInstanceUID"),
        ("rtplan", ("ReferencedRTPlanSequence",), "ReferencedSOPInstanceUID"),
    ),
    "RTDOSE": (
        ("rtplan", ("ReferencedRTPlanSequence",), "ReferencedSOPInstanceUID"),
        ("rtstruct", ("ReferencedStructureSetSequence",), "ReferencedSOPInstanceUID"),
    ),
    "REG": (
        ("frame_of_reference", ("RegistrationSequence",), "FrameOfReferenceUID"),
        ("series", ("ReferencedSeriesSequence",), "SeriesInstanceUID"),
        ("series", ("StudiesContainingOtherReferencedInstancesSequence",
                    "ReferencedSeriesSequence"), "SeriesInstanceUID"),
    ),
}


class IncompleteDataset(ValueError):
    """The encoded data set ends before its last element does (a truncated transfer or file)."""


@dataclass
class InstanceRecord:
    """One instance as the index stores it."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    accession_number: str = ""
    series_number: int | None = None
    series_description: str = ""
    instance_number: int | None = None
    frame_of_reference_uid: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    refs: list[tuple[str, str]] = field(default_factory=list)


def check_complete(raw: bytes, implicit_vr: bool, little_endian: bool) -> int | None:
    """Raise IncompleteDataset unless the top-level elements account for every byte.

    pydicom reads a truncated stream without complaint (it stops at the last whole element, or
    returns a short value), so the check is ours: each defined-length value must be as long as
    its header says, and the last element must end exactly at the end of the bytes. Returns the
    length of a native (defined-length) Pixel Data value, for ``check_pixel_data``.
    """
    fp = io.BytesIO(raw)
    end = 0
    pixel_bytes = None
    try:
        for elem in data_element_generator(fp, implicit_vr, little_endian, defer_size=None):
            if isinstance(elem, RawDataElement) and elem.length != UNDEFINED_LENGTH \
                    and elem.value is not None:
                if len(elem.value) != elem.length:
                    raise IncompleteDataset(
                        f"element {elem.tag} declares {elem.length} bytes, only "
                        f"{len(elem.value)} present")
                if elem.tag == PIXEL_DATA:
                    pixel_bytes = elem.length
            end = fp.tell()
    except (EOFError, OSError, ValueError) as exc:
        if isinstance(exc, IncompleteDataset):
            raise
        raise IncompleteDataset(f"data set cannot be parsed: {exc}") from None
    if end != len(raw):
        raise IncompleteDataset(f"data set ends inside an element ({len(raw) - end} stray bytes)")
    return pixel_bytes


def check_pixel_data(ds: Dataset, pixel_bytes: int | None) -> None:
    """Native Pixel Data must hold every frame its image attributes describe.

    A sender that re-encodes a truncated file produces a well-formed data set with short Pixel
    Data; accepting it would file a CT slice that no viewer or stage can read.
    """
    if pixel_bytes is None or "Rows" not in ds or "BitsAllocated" not in ds:
        return
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) \
        * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated)
    expected = (bits + 7) // 8
    if pixel_bytes < expected:
        raise IncompleteDataset(f"Pixel Data holds {pixel_bytes} bytes, its image attributes "
                                f"need {expected}")


def _walk(items: Iterable[Dataset], path: tuple[str, ...], keyword: str) -> Iterator[str]:
    if not path:
        for item in items:
            v = item.get(keyword)
            if v:
                yield str(v)
        return
    for item in items:
        seq = item.get(path[0])
        if seq:
            yield from _walk(seq, path[1:], keyword)


def references(ds: Dataset, modality: str) -> list[tuple[str, str]]:
    """Every (kind, UID) that ds points at, in first-seen order, without repeats."""
    seen: dict[tuple[str, str], None] = {}
    for kind, path, keyword in REFERENCE_PATHS.get(modality, ()):
        for uid in _walk([ds], path, keyword):
            seen.setdefault((kind, uid), None)
    return list(seen)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a pydicom value (MultiValue → list, DS/IS → float/int)."""
    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def read_header(blob: bytes) -> Dataset:
    """Parse a whole Part 10 file image up to the pixel data."""
    return dcmread(io.BytesIO(blob), stop_before_pixels=True, defer_size=4096, force=True)


def instance_record(ds: Dataset) -> InstanceRecord:
    """The index's view of a parsed header. Missing UIDs come back empty for the caller to judge."""
    modality = str(ds.get("Modality", "") or "")
    attrs = {k: _plain(ds.get(k)) for k in INSTANCE_ATTRS if ds.get(k) not in (None, "")}
    return InstanceRecord(
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        modality=modality,
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        patient_birth_date=str(ds.get("PatientBirthDate", "") or ""),
        patient_sex=str(ds.get("PatientSex", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        study_time=str(ds.get("StudyTime", "") or ""),
        study_description=str(ds.get("StudyDescription", "") or ""),
        accession_number=str(ds.get("AccessionNumber", "") or ""),
        series_number=_int(ds.get("SeriesNumber")),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        instance_number=_int(ds.get("InstanceNumber")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        attrs=attrs,
        refs=references(ds, modality),
    )


def transfer_syntax_flags(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the data set encoding; deflate reads as explicit LE."""
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        raise ValueError(f"{transfer_syntax} is not a transfer syntax")
    return uid.is_implicit_VR, uid.is_little_endian
