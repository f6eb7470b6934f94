"""DVHSequence items as a TPS exports them in an RTDOSE, for testing DVH checks.

Build them from any cumulative curve (an analytic truth, or one deliberately off) and pass them
to ``make_rtdose(..., dvhs=[...])``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence


def make_dvh_item(roi_number: int, doses_gy: Sequence[float], volumes: Sequence[float],
                  mean_gy: float | None = None, volume_units: str = "CM3",
                  dose_units: str = "GY", dvh_type: str = "CUMULATIVE",
                  dose_scaling: float = 1.0) -> Dataset:
    """One DVHSequence item. ``doses_gy`` are the lower edges of equal bins starting at 0 and
    ``volumes`` the cumulative volume receiving at least each edge (cc or %); DVHData holds
    (bin width, volume) pairs in ``dose_units`` divided by ``dose_scaling``."""
    doses = np.asarray(doses_gy, dtype=float)
    vols = np.asarray(volumes, dtype=float)
    unit = 100.0 if dose_units.upper() == "CGY" else 1.0
    widths = np.diff(np.append(doses, doses[-1] + (doses[-1] - doses[-2]))) * unit / dose_scaling
    if dvh_type.upper() == "DIFFERENTIAL":
        vols = -np.diff(np.append(vols, 0.0))
    data = np.column_stack([widths, vols]).ravel()
    item = Dataset()
    ref = Dataset()
    ref.ReferencedROINumber = roi_number
    ref.DVHROIContributionType = "INCLUDED"
    item.DVHReferencedROISequence = DicomSequence([ref])
    item.DVHType = dvh_type.upper()
    item.DoseUnits = dose_units.upper()
    item.DoseType = "PHYSICAL"
    item.DVHDoseScaling = f"{dose_scaling:.6g}"
    item.DVHVolumeUnits = volume_units
    item.DVHNumberOfBins = int(doses.size)
    item.DVHData = [f"{v:.6g}" for v in data]
    if mean_gy is not None:
        item.DVHMeanDose = f"{mean_gy * unit:.6g}"
    return item
