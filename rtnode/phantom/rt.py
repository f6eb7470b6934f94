"""RT Structure Set, RT Plan and RT Dose objects for a phantom course.

They reference each other the way a TPS export does — RTSTRUCT → CT slices, RTPLAN → RTSTRUCT,
RTDOSE → RTPLAN, all on the CT's FrameOfReferenceUID — because course building and every stage
downstream follow exactly those references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
    generate_uid,
)

from rtnode.phantom.ct import Patient, base_dataset
from rtnode.phantom.shapes import Shape


def _ds_str(v: float) -> str:
    """A DS value that always fits the 16-character limit."""
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.8e}"[:16]


def _item(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def make_rtstruct(patient: Patient, ct: Sequence[Dataset], shapes: Sequence[Shape],
                  label: str = "PHANTOM", series_number: int = 2,
                  algorithm: str = "MANUAL") -> Dataset:
    """An RTSTRUCT with one ROI per shape, one CLOSED_PLANAR contour per polygon per CT slice.

    Contours are placed on the CT slice planes (axial CT assumed, slice z from IPP), each with a
    ContourImageSequence item naming its slice, as TPS exports do and as some importers require.
    """
    ds = base_dataset(patient, RTStructureSetStorage, "RTSTRUCT", generate_uid(), series_number,
                      f"{label} structures")
    ds.FrameOfReferenceUID = patient.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = label
    ds.StructureSetName = label
    ds.StructureSetDate = ds.InstanceCreationDate
    ds.StructureSetTime = ds.InstanceCreationTime
    ds.OperatorsName = ""

    contour_images = [_item(ReferencedSOPClassUID=s.SOPClassUID,
                            ReferencedSOPInstanceUID=s.SOPInstanceUID) for s in ct]
    series_item = _item(SeriesInstanceUID=ct[0].SeriesInstanceUID,
                        ContourImageSequence=DicomSequence(contour_images))
    study_item = _item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                       ReferencedSOPInstanceUID=patient.study_uid,
                       RTReferencedSeriesSequence=DicomSequence([series_item]))
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([
        _item(FrameOfReferenceUID=patient.frame_of_reference_uid,
              RTReferencedStudySequence=DicomSequence([study_item]))])

    roi_items, contour_items, obs_items = [], [], []
    for number, shape in enumerate(shapes, start=1):
        roi_items.append(_item(ROINumber=number,
                               ReferencedFrameOfReferenceUID=patient.frame_of_reference_uid,
                               ROIName=shape.name, ROIGenerationAlgorithm=algorithm))
        contours = []
        for s in ct:
            z = float(s.ImagePositionPatient[2])
            for poly in shape.contours_at(z):
                pts = np.column_stack([poly, np.full(len(poly), z)]).ravel()
                contours.append(_item(
                    ContourImageSequence=DicomSequence([_item(
                        ReferencedSOPClassUID=s.SOPClassUID,
                        ReferencedSOPInstanceUID=s.SOPInstanceUID)]),
                    ContourGeometricType="CLOSED_PLANAR",
                    NumberOfContourPoints=len(poly),
                    ContourData=[_ds_str(v) for v in pts]))
        item = _item(ROIDisplayColor=list(shape.color), ReferencedROINumber=number)
        if contours:
            item.ContourSequence = DicomSequence(contours)
        contour_items.append(item)
        obs_items.append(_item(ObservationNumber=number, ReferencedROINumber=number,
                               ROIObservationLabel=shape.name,
                               RTROIInterpretedType=shape.interpreted_type,
                               ROIInterpreter=""))
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(obs_items)
    return ds


def make_rtplan(patient: Patient, rtstruct: Dataset, prescription_gy: float = 60.0,
                fractions: int = 30, target_roi_number: int = 1, label: str = "PLAN1",
                series_number: int = 3, related: Sequence[tuple[Dataset, str]] = (),
                approval: str = "UNAPPROVED", plan_date: str | None = None) -> Dataset:
    """A minimal photon plan: one beam, one fraction group, a target prescription.

    ``related``: (other RTPLAN, RTPlanRelationship) pairs written to ReferencedRTPlanSequence
    (PREDECESSOR for a replan, PRIOR/CONCURRENT for a boost, ...); ``approval`` is
    ApprovalStatus; ``plan_date`` (YYYYMMDD) overrides RTPlanDate."""
    ds = base_dataset(patient, RTPlanStorage, "RTPLAN", generate_uid(), series_number,
                      f"{label} plan")
    ds.FrameOfReferenceUID = patient.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = label
    ds.RTPlanName = label
    ds.RTPlanDate = ds.InstanceCreationDate
    ds.RTPlanTime = ds.InstanceCreationTime
    ds.RTPlanGeometry = "PATIENT"
    ds.OperatorsName = ""
    ds.ApprovalStatus = approval
    if plan_date is not None:
        ds.RTPlanDate = plan_date
    if related:
        ds.ReferencedRTPlanSequence = DicomSequence([
            _item(ReferencedSOPClassUID=other.SOPClassUID,
                  ReferencedSOPInstanceUID=other.SOPInstanceUID, RTPlanRelationship=rel)
            for other, rel in related])
    ds.ReferencedStructureSetSequence = DicomSequence([
        _item(ReferencedSOPClassUID=rtstruct.SOPClassUID,
              ReferencedSOPInstanceUID=rtstruct.SOPInstanceUID)])
    ds.DoseReferenceSequence = DicomSequence([
        _item(DoseReferenceNumber=1, DoseReferenceUID=generate_uid(),
              DoseReferenceStructureType="VOLUME", DoseReferenceType="TARGET",
              ReferencedROINumber=target_roi_number,
              TargetPrescriptionDose=_ds_str(prescription_gy))])
    ds.PatientSetupSequence = DicomSequence([
        _item(PatientSetupNumber=1, PatientPosition="HFS")])
    cp0 = _item(ControlPointIndex=0, CumulativeMetersetWeight=0.0,
                NominalBeamEnergy=6, GantryAngle=0, GantryRotationDirection="NONE",
                BeamLimitingDeviceAngle=0, BeamLimitingDeviceRotationDirection="NONE",
                PatientSupportAngle=0, PatientSupportRotationDirection="NONE",
                TableTopEccentricAngle=0, TableTopEccentricRotationDirection="NONE",
                IsocenterPosition=[0.0, 0.0, 0.0], SourceToSurfaceDistance=900.0,
                BeamLimitingDevicePositionSequence=DicomSequence([
                    _item(RTBeamLimitingDeviceType="ASYMX", LeafJawPositions=[-50.0, 50.0]),
                    _item(RTBeamLimitingDeviceType="ASYMY", LeafJawPositions=[-50.0, 50.0])]))
    cp1 = _item(ControlPointIndex=1, CumulativeMetersetWeight=1.0)
    ds.BeamSequence = DicomSequence([_item(
        BeamNumber=1, BeamName="AP", BeamType="STATIC", RadiationType="PHOTON",
        TreatmentMachineName="LINAC", PrimaryDosimeterUnit="MU", SourceAxisDistance=1000.0,
        BeamLimitingDeviceSequence=DicomSequence([
            _item(RTBeamLimitingDeviceType="ASYMX", NumberOfLeafJawPairs=1),
            _item(RTBeamLimitingDeviceType="ASYMY", NumberOfLeafJawPairs=1)]),
        TreatmentDeliveryType="TREATMENT", NumberOfWedges=0, NumberOfCompensators=0,
        NumberOfBoli=0, NumberOfBlocks=0, FinalCumulativeMetersetWeight=1.0,
        NumberOfControlPoints=2, ReferencedPatientSetupNumber=1,
        ControlPointSequence=DicomSequence([cp0, cp1]))])
    ds.FractionGroupSequence = DicomSequence([_item(
        FractionGroupNumber=1, NumberOfFractionsPlanned=fractions, NumberOfBeams=1,
        NumberOfBrachyApplicationSetups=0,
        ReferencedBeamSequence=DicomSequence([_item(ReferencedBeamNumber=1,
                                                    BeamMeterset=200.0)]))])
    return ds


@dataclass
class DoseGrid:
    """An axial dose grid; origin is the centre of the first voxel, as RTDOSE IPP is."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]  # (x, y, z) mm
    shape: tuple[int, int, int]  # (frames, rows, columns)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nz, ny, nx = self.shape
        return (self.origin[0] + np.arange(nx) * self.spacing[0],
                self.origin[1] + np.arange(ny) * self.spacing[1],
                self.origin[2] + np.arange(nz) * self.spacing[2])


#: ImageOrientationPatient of axial grids by patient position
ORIENTATIONS = {
    "HFS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "HFP": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "FFS": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "FFP": (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "HFDL": (0.0, 1.0, 0.0, -1.0, 0.0, 0.0), "HFDR": (0.0, -1.0, 0.0, 1.0, 0.0, 0.0),
    "FFDL": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0), "FFDR": (0.0, -1.0, 0.0, -1.0, 0.0, 0.0),
}


def _oriented(values: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray],
              orientation: Sequence[float]) -> tuple[np.ndarray, list[float], list[float],
                                                     np.ndarray]:
    """values[z, y, x] stored as (frames, rows, columns) for an axial ImageOrientationPatient:
    returns the pixel array, IPP, PixelSpacing and the frame offsets along the slice normal."""
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    a_row, a_col = int(np.argmax(np.abs(row))), int(np.argmax(np.abs(col)))
    if {a_row, a_col} != {0, 1}:
        raise ValueError("the phantom writes axial dose grids only")
    arr = values if (a_row, a_col) == (0, 1) else np.transpose(values, (0, 2, 1))
    flips = [normal[2] < 0, col[a_col] < 0, row[a_row] < 0]
    for axis, flip in enumerate(flips):
        if flip:
            arr = np.flip(arr, axis=axis)
    xs, ys, zs = axes
    coord = {0: xs, 1: ys}
    ipp = [0.0, 0.0, 0.0]
    ipp[a_row] = float(coord[a_row][-1] if row[a_row] < 0 else coord[a_row][0])
    ipp[a_col] = float(coord[a_col][-1] if col[a_col] < 0 else coord[a_col][0])
    ipp[2] = float(zs[-1] if normal[2] < 0 else zs[0])
    step = {0: float(xs[1] - xs[0]) if xs.size > 1 else 1.0,
            1: float(ys[1] - ys[0]) if ys.size > 1 else 1.0}
    offsets = np.abs(zs - ipp[2])
    return np.ascontiguousarray(arr), ipp, [step[a_col], step[a_row]], np.sort(offsets)


def make_rtdose(patient: Patient, rtplan: Dataset | Sequence[Dataset] | None, grid: DoseGrid,
                dose: Callable, summation: str = "PLAN", units: str = "GY",
                series_number: int = 4, absolute_offsets: bool = False,
                dvhs: Sequence[Dataset] | None = None,
                orientation: Sequence[float] = ORIENTATIONS["HFS"]) -> Dataset:
    """A 3-D RTDOSE sampled from dose(x, y, z) in Gy at the grid's voxel centres.

    Pixels are uint32 with DoseGridScaling chosen so the maximum uses the full range, which keeps
    quantisation far below 1e-6 Gy. ``absolute_offsets`` writes GridFrameOffsetVector as patient z
    (the older, still-seen form) instead of offsets from the first frame. ``rtplan`` may be
    several plans (a plan sum referencing each); ``orientation`` is any axial
    ImageOrientationPatient (``ORIENTATIONS``: HFS, FFS, HFP, decubitus...), the same dose
    stored in that pixel order.
    """
    ds = base_dataset(patient, RTDoseStorage, "RTDOSE", generate_uid(), series_number,
                      "Dose")
    ds.FrameOfReferenceUID = patient.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    xs, ys, zs = grid.axes()
    z3, y3, x3 = np.meshgrid(zs, ys, xs, indexing="ij")
    values = np.asarray(dose(x3, y3, z3), dtype=float)
    if units == "CGY":
        values = values * 100.0
    vmax = float(values.max()) if values.size else 0.0
    # write the scaling first and use the value as written, so pixels * DS is the dose exactly
    scaling_ds = f"{vmax / 4.0e9:.9e}" if vmax > 0 else "1"
    scaling = float(scaling_ds)
    pixels = np.rint(values / scaling).astype(np.uint32)
    ds.InstanceNumber = 1
    standard = tuple(float(v) for v in orientation) == ORIENTATIONS["HFS"]
    if standard:
        ds.ImagePositionPatient = [float(v) for v in grid.origin]
        ds.PixelSpacing = [float(grid.spacing[1]), float(grid.spacing[0])]
    else:
        pixels, ipp, spacing, rel = _oriented(pixels, (xs, ys, zs), orientation)
        ds.ImagePositionPatient = ipp
        ds.PixelSpacing = spacing
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.SliceThickness = float(grid.spacing[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = pixels.shape[0]
    ds.FrameIncrementPointer = 0x3004000C
    ds.Rows = pixels.shape[1]
    ds.Columns = pixels.shape[2]
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = units
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    offsets = zs if absolute_offsets else zs - zs[0]
    if not standard:
        offsets = rel
    ds.GridFrameOffsetVector = [_ds_str(float(v)) for v in offsets]
    ds.DoseGridScaling = scaling_ds
    plans = [] if rtplan is None else [rtplan] if isinstance(rtplan, Dataset) else list(rtplan)
    if plans:
        ds.ReferencedRTPlanSequence = DicomSequence([
            _item(ReferencedSOPClassUID=p.SOPClassUID, ReferencedSOPInstanceUID=p.SOPInstanceUID)
            for p in plans])
    if dvhs:
        ds.DVHSequence = DicomSequence(list(dvhs))
    ds.PixelData = pixels.tobytes()
    return ds
