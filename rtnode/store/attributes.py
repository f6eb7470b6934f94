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

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.multival import MultiValue
from pydicom.tag import Tag

PREAMBLE = b"\x00" * 128 + b"DICM"  # the start of every Part 10 file
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARACTER_SET = 0x00080005

#: single-valued attributes copied into the instance's JSON ``attrs`` when present
INSTANCE_ATTRS = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "Rows", "Columns", "NumberOfFrames", "AcquisitionNumber", "PatientPosition", "ImageType",
    "DoseSummationType", "DoseType", "DoseUnits", "RTPlanLabel", "RTPlanName", "RTPlanDate",
    "ApprovalStatus", "StructureSetLabel", "StructureSetDate", "ContentDate", "ContentTime",
    "Manufacturer", "StationName", "ManufacturerModelName",
    # announced series sizes: a course with fewer slices is "possibly incomplete"
    "ImagesInAcquisition", "NumberOfSlices",
)

#: top-level keywords instance_record reads (everything else stays unconverted)
WANTED = {Tag(kw): kw for kw in (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "StudyDescription", "AccessionNumber", "SeriesNumber", "SeriesDescription", "InstanceNumber",
    "FrameOfReferenceUID", *INSTANCE_ATTRS)}

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


def parse_dataset(raw: bytes, implicit_vr: bool,
                  little_endian: bool) -> tuple[Dataset, int | None]:
    """Read an encoded data set in one pass and prove it is whole.

    Returns the data set (values still raw: pydicom converts only what is asked for) and the
    length of a native, defined-length Pixel Data value for ``check_pixel_data``. pydicom reads
    a truncated stream without complaint — it stops at the last whole element, or returns a short
    value — so the check is ours: each defined-length value must be as long as its header says,
    and the last element must end exactly where the bytes do. Raises IncompleteDataset.
    """
    fp = io.BytesIO(raw)
    elements: dict = {}
    end = 0
    pixel_bytes = None
    try:
        for elem in data_element_generator(fp, implicit_vr, little_endian, defer_size=None):
            if isinstance(elem, RawDataElement) and elem.length != UNDEFINED_LENGTH:
                if elem.value is not None and len(elem.value) != elem.length:
                    raise IncompleteDataset(
                        f"element {elem.tag} declares {elem.length} bytes, only "
                        f"{len(elem.value)} present")
                if elem.tag == PIXEL_DATA:
                    pixel_bytes = elem.length
            elements[elem.tag] = elem
            end = fp.tell()
    except (EOFError, OSError, ValueError) as exc:
        if isinstance(exc, IncompleteDataset):
            raise
        raise IncompleteDataset(f"data set cannot be parsed: {exc}") from None
    if end != len(raw):
        raise IncompleteDataset(f"data set ends inside an element ({len(raw) - end} stray bytes)")
    ds = Dataset(elements)
    charset = elements.get(SPECIFIC_CHARACTER_SET)
    encoding = convert_encodings(convert_raw_data_element(charset).value) if charset else \
        default_encoding
    ds.set_original_encoding(implicit_vr, little_endian, encoding)
    return ds, pixel_bytes


def check_pixel_data(ds: Dataset, pixel_bytes: int | None) -> None:
    """Native Pixel Data must hold every frame its image attributes describe.

    A sender that re-encodes a truncated file produces a well-formed data set with short Pixel
    Data; accepting it would file a CT slice that no viewer or stage can read.
    """
    if pixel_bytes is None or "Rows" not in ds:
        return
    if pixel_bytes == 0 and (ds.get("Rows") or ds.get("Columns")):
        raise IncompleteDataset("Pixel Data is empty although Rows/Columns describe an image")
    if "BitsAllocated" not in ds:
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


#: what an SQLite INTEGER holds; an IS value beyond it (IS allows 12 characters, senders send
#: more) is kept in the file and left out of the index rather than failing the commit
INT64 = (-(2**63), 2**63 - 1)
#: the UIDs that name the instance; their raw values are checked for stray padding
NAMING_UIDS = {Tag(kw): kw for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                      "SeriesInstanceUID")}


def _int(value: Any) -> int | None:
    try:
        n = int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n is None or INT64[0] <= n <= INT64[1] else None


def uid_padding_problem(ds: Dataset) -> str | None:
    """A naming UID whose raw value carries whitespace (UI pads with one trailing NUL only).

    pydicom strips such padding when it converts the value, so the index would keep the
    trimmed UID while the file keeps the untrimmed one: two different identities.
    """
    for tag, keyword in NAMING_UIDS.items():
        if tag not in ds:
            continue
        raw = ds.get_item(tag).value
        if not isinstance(raw, (bytes, bytearray)):
            continue
        body = bytes(raw)
        if body.endswith(b"\x00") and len(body) % 2 == 0:
            body = body[:-1]
        if body != body.strip() or b"\x00" in body:
            return f"{keyword} {body.decode('latin-1')!r} has leading/trailing padding"
    return None


def instance_record(ds: Dataset) -> InstanceRecord:
    """The index's view of a parsed header. Missing UIDs come back empty for the caller to judge."""
    present = {kw: ds[tag].value for tag, kw in WANTED.items() if tag in ds}

    def text(keyword: str) -> str:
        v = present.get(keyword)
        return "" if v is None else str(v)

    modality = text("Modality")
    return InstanceRecord(
        sop_class_uid=text("SOPClassUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        modality=modality,
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        study_description=text("StudyDescription"),
        accession_number=text("AccessionNumber"),
        series_number=_int(present.get("SeriesNumber")),
        series_description=text("SeriesDescription"),
        instance_number=_int(present.get("InstanceNumber")),
        frame_of_reference_uid=text("FrameOfReferenceUID"),
        attrs={k: _plain(present[k]) for k in INSTANCE_ATTRS if present.get(k) not in (None, "")},
        refs=references(ds, modality) if modality in REFERENCE_PATHS else [],
    )
