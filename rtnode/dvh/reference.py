"""The reference engine: dicompyler-core 0.5.6 ``get_dvh`` in its default mode.

It is an independent implementation used as a cross-check and selectable with
``dvh.engine: dicompyler``. Default mode means: inside/outside tests of dose-grid pixel centres
(matplotlib Path) on each contour plane, the dose plane at the contour z (linear between frames),
each plane weighted by the ROI's smallest plane spacing, 0.01 Gy bins. Its known weaknesses —
volumes quantised to whole dose pixels, no dose variation within a slab, zero volume for
single-plane ROIs — are what the rtnode engine is measured against (docs/DVH.md).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage, generate_uid

from rtnode.dvh.dose import DoseVolume
from rtnode.dvh.engine import RoiDVH, roi_source
from rtnode.dvh.histogram import CumulativeDVH
from rtnode.dvh.structures import StructureROI


#: dicompyler-core's histogram bin width (it bins in cGy)
BIN_WIDTH_GY = 0.01


def _dvhcalc():
    """Import dicompyler-core under pydicom 3, which dropped the ``read_file`` alias it uses."""
    import pydicom
    import pydicom.dicomio

    if not hasattr(pydicom.dicomio, "read_file"):
        pydicom.dicomio.read_file = pydicom.dcmread
    if not hasattr(pydicom, "read_file"):
        pydicom.read_file = pydicom.dcmread
    logging.getLogger("dicompylercore").setLevel(logging.ERROR)
    from dicompylercore import dvhcalc

    return dvhcalc


def dose_as_dataset(dose: DoseVolume, template: Dataset) -> Dataset:
    """A new axial head-first RTDOSE in Gy carrying ``dose`` — how dicompyler-core is given doses
    it cannot read correctly by itself (cGy, RELATIVE, summed, flipped grids). Identity comes
    from ``template``, which is left untouched."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = RTDoseStorage
    ds.SOPClassUID = RTDoseStorage
    ds.SOPInstanceUID = str(getattr(template, "SOPInstanceUID", "") or generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "RTDOSE"
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if keyword in template:
            setattr(ds, keyword, getattr(template, keyword))
    vmax = float(dose.values.max(initial=0.0))
    scaling = f"{vmax / 4.0e9:.9e}" if vmax > 0 else "1"
    pixels = np.rint(dose.values / float(scaling)).astype(np.uint32)
    ds.ImagePositionPatient = [float(dose.x[0]), float(dose.y[0]), float(dose.z[0])]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    sx, sy, sz = dose.spacing
    ds.PixelSpacing = [sy, sx]
    ds.SliceThickness = sz
    ds.NumberOfFrames = int(dose.values.shape[0])
    ds.Rows, ds.Columns = int(dose.values.shape[1]), int(dose.values.shape[2])
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.GridFrameOffsetVector = [float(v) for v in dose.z - dose.z[0]]
    ds.DoseGridScaling = scaling
    ds.DoseUnits = "GY"
    ds.DoseType = str(getattr(template, "DoseType", "PHYSICAL"))
    ds.DoseSummationType = dose.summation_type
    ds.PixelData = pixels.tobytes()
    return ds


def reference_dose_dataset(datasets: list[Dataset], dose: DoseVolume) -> Dataset:
    """The RTDOSE to give dicompyler-core: the file itself when it is one relative-offset RTDOSE
    in Gy, which it reads natively, else a faithful re-encoding of the loaded dose."""
    if len(dose.sources) == 1:
        for ds in datasets:
            gfov = getattr(ds, "GridFrameOffsetVector", None) or [0]
            if (str(ds.SOPInstanceUID) == dose.sources[0]
                    and str(getattr(ds, "DoseUnits", "GY")).upper() == "GY"
                    and float(gfov[0]) == 0.0
                    and [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]):
                return ds
    return dose_as_dataset(dose, datasets[0])


def reference_roi_dvh(rtstruct: Dataset, rtdose: Dataset, roi: StructureROI) -> RoiDVH:
    """dicompyler-core's DVH of one ROI in rtnode's result type (volumes in cc, doses in Gy)."""
    dvhcalc = _dvhcalc()
    result = RoiDVH(roi_number=roi.number, roi_name=roi.name,
                    interpreted_type=roi.interpreted_type, source=roi_source(roi),
                    engine="dicompyler", volume_cc=0.0, covered_cc=0.0,
                    dvh=CumulativeDVH(BIN_WIDTH_GY, np.zeros(1)),
                    skipped_contours=roi.skipped_contours, warnings=list(roi.warnings),
                    display_color=roi.display_color)
    try:
        with warnings.catch_warnings():  # its pixel access uses APIs pydicom 3 deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            calc = dvhcalc.get_dvh(rtstruct, rtdose, roi.number)
    except Exception as exc:  # dicompyler-core fails on some degenerate input
        result.warnings.append(f"dicompyler-core failed: {exc}")
        return result
    counts = np.asarray(calc.counts, dtype=float)
    if counts.size <= 1 or not np.isfinite(counts).all() or counts.max() <= 0:
        return result
    result.dvh = CumulativeDVH(BIN_WIDTH_GY, np.append(counts, 0.0))
    result.volume_cc = result.covered_cc = float(calc.volume)
    result.dmin_gy, result.dmax_gy = float(calc.min), float(calc.max)
    result.dmean_gy = float(calc.mean) if math.isfinite(calc.mean) else math.nan
    if calc.notes:
        result.warnings.append(str(calc.notes))
    return result
