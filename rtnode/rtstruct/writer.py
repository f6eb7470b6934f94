"""RT Structure Set from label masks on a CT grid.

The object references the CT exactly as a TPS export does — FrameOfReferenceUID, study, series
and a ContourImageSequence item on every contour naming the CT slice it lies on — and copies the
CT's patient and study modules, because TPS importers match on exactly those. ROIs are marked
ROIGenerationAlgorithm AUTOMATIC with the model named in ROIGenerationDescription.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from rtnode import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, __version__
from rtnode.rtstruct.contours import mask_to_polygons, remove_small_islands
from rtnode.rtstruct.geometry import CTGrid

#: ReferencedSOPClassUID of the study reference, as TPS exports write it (Detached Study
#: Management; retired, but what importers expect in RTReferencedStudySequence)
STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"
#: islands (3-D connected components) smaller than this are not contoured by default
DEFAULT_MIN_ISLAND_VOXELS = 10

#: patient-level attributes copied from the CT when present (Patient module and friends)
PATIENT_ATTRIBUTES = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "OtherPatientIDsSequence", "PatientComments", "PatientIdentityRemoved",
    "DeidentificationMethod", "PatientAge", "PatientSize", "PatientWeight",
)
#: study-level attributes copied from the CT when present (General Study module)
STUDY_ATTRIBUTES = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "StudyDescription", "IssuerOfAccessionNumberSequence",
)
#: Type 2 attributes of the Patient, General Study, RT Series and General Equipment modules,
#: written empty when the CT lacks them
TYPE2_DEFAULTS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                  "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                  "OperatorsName", "Manufacturer")

#: (3006,0050) Contour Data
CONTOUR_DATA = Tag(0x30060050)

#: colours for labels the model gives none for (distinct, readable on a CT)
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
           (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0),
           (0, 255, 128), (128, 64, 0), (64, 128, 128), (192, 192, 192), (128, 0, 0)]


def format_ds(value: float) -> str:
    """A Decimal String of at most 16 characters: 4 decimals (0.1 µm) trimmed of zeros, or
    fewer significant digits for very large magnitudes."""
    s = f"{value:.4f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    if len(s) > 16:
        for digits in range(10, 0, -1):
            s = f"{value:.{digits}g}"
            if len(s) <= 16:
                break
    return s


def _item(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _slice_contours(grid: CTGrid, mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(slice index, (N, 3) patient points) for every polygon of the mask."""
    out = []
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        for poly in mask_to_polygons(mask[k]):
            pts = grid.index_to_patient(float(k), poly[:, 0], poly[:, 1])
            out.append((int(k), pts))
    return out


#: below this magnitude every "%.4f" value fits a 16-character DS
_FAST_FORMAT_LIMIT = 1e10


def format_ds_values(values: np.ndarray) -> str:
    """``format_ds`` of every value, joined by backslashes: the whole multi-value DS string.

    One %-format call for all values, then a few plain replacements over the joined text
    instead of one Python call per coordinate (a BODY has ~10⁶). Every value is written with
    exactly four decimals, so the zeros before a backslash are decimals: at most three, two,
    one of them go, then a bare point. The text is the same as ``format_ds`` gives (tested)."""
    flat = np.asarray(values, dtype=float).ravel()
    if flat.size == 0:
        return ""
    if not np.abs(flat).max() < _FAST_FORMAT_LIMIT:  # also catches NaN and infinities
        return "\\".join(format_ds(v) for v in flat)
    text = "\\" + "\\".join(["%.4f"] * flat.size) % tuple(flat.tolist()) + "\\"
    for zeros in ("000\\", "00\\", "0\\", ".\\"):
        text = text.replace(zeros, "\\")
    while "\\-0\\" in text:  # "-0.0000" became "-0": DS zero is "0"
        text = text.replace("\\-0\\", "\\0\\")
    return text[1:-1]


def contour_data_element(points: np.ndarray) -> RawDataElement:
    """ContourData as its encoded bytes: a BODY has ~10⁶ coordinates, and building a
    pydicom DS object for each would cost seconds; the bytes are what gets written anyway
    (the item's encoding is declared in ``write_rtstruct`` so that writing keeps them raw)."""
    value = format_ds_values(points).encode()
    if len(value) % 2:
        value += b" "
    return RawDataElement(CONTOUR_DATA, "DS", len(value), value, 0, True, True)


def _contour_item(grid: CTGrid, k: int, pts: np.ndarray, number: int) -> Dataset:
    item = _item(
        ContourImageSequence=DicomSequence([_item(
            ReferencedSOPClassUID=grid.sop_class_uids[k],
            ReferencedSOPInstanceUID=grid.sop_instance_uids[k])]),
        ContourGeometricType="CLOSED_PLANAR",
        NumberOfContourPoints=len(pts),
        ContourNumber=number)
    item[CONTOUR_DATA] = contour_data_element(pts)
    return item


def write_rtstruct(ct_datasets: Sequence[Dataset], masks: Mapping[str, np.ndarray], *,
                   colors: Mapping[str, Sequence[int]] | None = None,
                   interpreted_types: Mapping[str, str] | None = None,
                   model: str = "", label: str = "AUTOSEG",
                   series_description: str | None = None, series_number: int = 901,
                   min_island_voxels: int = DEFAULT_MIN_ISLAND_VOXELS,
                   manufacturer: str = "rtnode") -> Dataset:
    """An RT Structure Set with one ROI per mask, ready to ``save_as(path, enforce_file_format=True)``.

    ``masks`` are boolean arrays shaped like ``CTGrid.from_datasets(ct_datasets).shape``
    (slices sorted along the slice normal, as SimpleITK reads the series). ``model`` names the
    algorithm (e.g. "totalsegmentator:total"); ROI names are used as given (LO, at most 64
    characters). An empty mask still gets its ROI, without contours.
    """
    grid = CTGrid.from_datasets(ct_datasets)
    ct0 = ct_datasets[0]
    colors = colors or {}
    interpreted_types = interpreted_types or {}
    for name, m in masks.items():
        if np.shape(m) != grid.shape:
            raise ValueError(f"mask {name!r} is shaped {np.shape(m)}, the CT grid is "
                             f"{grid.shape} (slices, rows, columns)")
        if not name or len(name) > 64 or "\\" in name:
            raise ValueError(f"ROI name {name!r} must be 1-64 characters without a backslash")
    if len(set(masks)) != len(list(masks)):
        raise ValueError("ROI names must be unique")

    sop_uid = generate_uid()
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    # Implicit VR: its 32-bit lengths hold any ContourData (Explicit VR caps DS at 64 KiB,
    # which a large BODY contour can exceed)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    ds.SpecificCharacterSet = ct0.get("SpecificCharacterSet", "ISO_IR 100")
    now = dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_uid
    for attr in (*PATIENT_ATTRIBUTES, *STUDY_ATTRIBUTES):
        if attr in ct0:
            ds[attr] = copy.deepcopy(ct0[attr])
    for attr in TYPE2_DEFAULTS:
        if attr not in ds:
            setattr(ds, attr, "")
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = (series_description or f"{label} {model}".strip())[:64]
    # General Equipment
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = "rtnode"
    ds.SoftwareVersions = __version__
    # Frame of Reference (so viewers that look for it on the object find it)
    ds.FrameOfReferenceUID = grid.frame_of_reference_uid
    ds.PositionReferenceIndicator = ct0.get("PositionReferenceIndicator", "")
    # Structure Set
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, time
    contour_images = [_item(ReferencedSOPClassUID=c, ReferencedSOPInstanceUID=i)
                      for c, i in zip(grid.sop_class_uids, grid.sop_instance_uids)]
    series_item = _item(SeriesInstanceUID=grid.series_instance_uid,
                        ContourImageSequence=DicomSequence(contour_images))
    study_item = _item(ReferencedSOPClassUID=STUDY_REFERENCE_CLASS,
                       ReferencedSOPInstanceUID=grid.study_instance_uid,
                       RTReferencedSeriesSequence=DicomSequence([series_item]))
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([
        _item(FrameOfReferenceUID=grid.frame_of_reference_uid,
              RTReferencedStudySequence=DicomSequence([study_item]))])

    roi_items, contour_items, obs_items = [], [], []
    for number, (name, mask) in enumerate(masks.items(), start=1):
        roi = _item(ROINumber=number, ReferencedFrameOfReferenceUID=grid.frame_of_reference_uid,
                    ROIName=name, ROIGenerationAlgorithm="AUTOMATIC")
        if model:
            roi.ROIGenerationDescription = model[:64]
        roi_items.append(roi)
        clean = remove_small_islands(np.asarray(mask, dtype=bool), min_island_voxels)
        contours = [_contour_item(grid, k, pts, n)
                    for n, (k, pts) in enumerate(_slice_contours(grid, clean), start=1)]
        color = colors.get(name) or PALETTE[(number - 1) % len(PALETTE)]
        item = _item(ROIDisplayColor=[int(v) for v in color], ReferencedROINumber=number)
        if contours:
            item.ContourSequence = DicomSequence(contours)
        contour_items.append(item)
        obs_items.append(_item(ObservationNumber=number, ReferencedROINumber=number,
                               ROIObservationLabel=name[:16],
                               RTROIInterpretedType=interpreted_types.get(name, "ORGAN"),
                               ROIInterpreter=""))
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(obs_items)
    ds.ApprovalStatus = "UNAPPROVED"
    # The contour items hold ContourData as raw implicit-VR bytes; declaring that encoding
    # lets save_as write them as they are (otherwise pydicom decodes every coordinate into a
    # DS object and encodes it again, seconds for a BODY). Written in another transfer syntax,
    # pydicom converts them as usual.
    for roi_contour in contour_items:
        for item in roi_contour.get("ContourSequence", []):
            item.set_original_encoding(True, True, item._character_set)
    return ds


def save_rtstruct(ds: Dataset, path: Path | str) -> Path:
    """Write the structure set as a DICOM Part 10 file (written to a temporary name first and
    renamed, so a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path
