"""A synthetic CT series: geometry, patient/study header and HU pixels drawn from analytic shapes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from rtnode import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from rtnode.phantom.shapes import EllipticBody, Shape


@dataclass
class Patient:
    """Patient and study level identity shared by every object of a phantom course."""

    patient_id: str = "PHANTOM001"
    patient_name: str = "Phantom^Sphere"
    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    study_date: str = "20260101"
    study_description: str = "RT planning phantom"
    accession: str = "ACC0001"


@dataclass
class CTGeometry:
    """Where the voxels are: image plane (IOP), in-plane spacing and the slice stack.

    ``orientation`` is DICOM ImageOrientationPatient (row cosine, column cosine). Slices are
    stacked along row x column; a negative ``slice_spacing`` builds the stack in the opposite
    direction (as a feet-first scan sent head to toe would appear).
    """

    rows: int = 128
    columns: int = 128
    pixel_spacing: tuple[float, float] = (2.0, 2.0)  # (row spacing, column spacing) in mm
    slices: int = 50
    slice_spacing: float = 2.5
    origin: tuple[float, float, float] | None = None  # IPP of the first slice; default centred
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    patient_position: str = "HFS"

    @property
    def row_cosine(self) -> np.ndarray:
        return np.asarray(self.orientation[:3], dtype=float)

    @property
    def column_cosine(self) -> np.ndarray:
        return np.asarray(self.orientation[3:], dtype=float)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    def first_position(self) -> np.ndarray:
        if self.origin is not None:
            return np.asarray(self.origin, dtype=float)
        half_w = (self.columns - 1) * self.pixel_spacing[1] / 2
        half_h = (self.rows - 1) * self.pixel_spacing[0] / 2
        half_d = (self.slices - 1) * self.slice_spacing / 2
        return -(self.row_cosine * half_w + self.column_cosine * half_h + self.normal * half_d)

    def slice_position(self, k: int) -> np.ndarray:
        return self.first_position() + self.normal * self.slice_spacing * k

    def voxel_centers(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient x, y, z of every pixel centre of slice k, each shaped (rows, columns)."""
        r, c = np.mgrid[0 : self.rows, 0 : self.columns]
        p = (self.slice_position(k)[:, None, None]
             + self.row_cosine[:, None, None] * (c * self.pixel_spacing[1])
             + self.column_cosine[:, None, None] * (r * self.pixel_spacing[0]))
        return p[0], p[1], p[2]


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def base_dataset(patient: Patient, sop_class_uid: str, modality: str, series_uid: str,
                 series_number: int, series_description: str) -> Dataset:
    """Patient, general study, general series and SOP common modules, filled the same way for
    every object so that a course generated here links up exactly as one from a TPS would."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = file_meta(sop_class_uid, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    now = dt.datetime.now()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.StudyDate = patient.study_date
    ds.StudyTime = "080000"
    ds.AccessionNumber = patient.accession
    ds.Modality = modality
    ds.Manufacturer = "rtnode phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = patient.study_description
    ds.SeriesDescription = series_description
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = patient.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    return ds


def water_phantom_hu(body: EllipticBody, inserts: Sequence[tuple[Shape, float]] = ()) -> Callable:
    """HU as a function of patient position: air outside the body, water inside, inserts on top."""

    def hu(x, y, z):
        out = np.full(x.shape, -1000.0)
        out[body.contains(x, y, z)] = body.hu
        for shape, value in inserts:
            out[shape.contains(x, y, z)] = value
        return out

    return hu


def make_ct_series(patient: Patient, geometry: CTGeometry, hu: Callable,
                   series_description: str = "Planning CT", series_number: int = 1,
                   series_uid: str | None = None) -> list[Dataset]:
    """One CT Image Storage instance per slice, int16 pixels, RescaleIntercept -1024."""
    series_uid = series_uid or generate_uid()
    datasets = []
    for k in range(geometry.slices):
        ds = base_dataset(patient, CTImageStorage, "CT", series_uid, series_number,
                          series_description)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = patient.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = geometry.patient_position
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.Laterality = ""
        ipp = geometry.slice_position(k)
        ds.ImagePositionPatient = [round(float(v), 4) for v in ipp]
        ds.ImageOrientationPatient = [float(v) for v in geometry.orientation]
        ds.SliceThickness = abs(geometry.slice_spacing)
        ds.SliceLocation = round(float(np.dot(ipp, geometry.normal)), 4)
        ds.PixelSpacing = list(geometry.pixel_spacing)
        ds.KVP = 120
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = geometry.rows
        ds.Columns = geometry.columns
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        x, y, z = geometry.voxel_centers(k)
        pixels = np.clip(np.rint(hu(x, y, z) + 1024), -32768, 32767).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        datasets.append(ds)
    return datasets
