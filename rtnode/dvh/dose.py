"""RTDOSE as a dose volume in Gy on ascending patient axes: scaling, units, frame positions, sums.

Everything downstream (rasteriser, interpolation, reference engine) sees only ``DoseVolume``,
so the RTDOSE variants a department meets — cGy exports, relative doses, absolute
GridFrameOffsetVector, feet-first or flipped grids, primary + boost plans — are settled here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from pydicom.dataset import Dataset

from rtnode.dvh.errors import DVHInputError


@dataclass
class DoseVolume:
    """Dose in Gy sampled at voxel centres x[i], y[j], z[k] (all ascending): values[k, j, i]."""

    values: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    frame_of_reference_uid: str = ""
    summation_type: str = "PLAN"
    sources: list[str] = field(default_factory=list)  # SOPInstanceUIDs of the RTDOSEs summed
    dvh_sequence: list[Dataset] = field(default_factory=list)  # TPS DVHs, single RTDOSE only
    referenced_plans: list[str] = field(default_factory=list)  # RTPLAN SOPInstanceUIDs
    notes: list[str] = field(default_factory=list)

    @cached_property
    def max_gy(self) -> float:
        return float(self.values.max(initial=0.0))

    @cached_property
    def voxel_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) of the 8 dose-grid values around every voxel cell [k:k+2, j:j+2,
        i:i+2]: the trilinear dose anywhere inside that cell lies between them."""
        lo = hi = self.values
        for axis in (2, 1, 0):  # separable: pairs along x, then y, then z
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[axis], b[axis] = slice(None, -1), slice(1, None)
            lo = np.minimum(lo[tuple(a)], lo[tuple(b)])
            hi = np.maximum(hi[tuple(a)], hi[tuple(b)])
        return lo, hi

    @property
    def spacing(self) -> tuple[float, float, float]:
        def step(a: np.ndarray) -> float:
            return float(np.median(np.diff(a))) if a.size > 1 else 0.0
        return step(self.x), step(self.y), step(self.z)

    @property
    def voxel_volume_cc(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    def same_grid(self, other: "DoseVolume") -> bool:
        return all(a.shape == b.shape and np.allclose(a, b, atol=1e-3)
                   for a, b in ((self.x, other.x), (self.y, other.y), (self.z, other.z)))


def _frame_positions(ds: Dataset, frames: int, normal: np.ndarray, axis: int) -> np.ndarray:
    """Patient coordinate (along ``axis``, the one the slice normal runs along) of every frame,
    from GridFrameOffsetVector in either DICOM form.

    Relative form: the first offset is 0 and offsets run along the slice normal from IPP.
    Absolute form (older exports, axial grids): the first offset equals IPP z and offsets are
    z positions.
    """
    ipp = float(ds.ImagePositionPatient[axis])
    gfov = getattr(ds, "GridFrameOffsetVector", None)
    if gfov is None or len(gfov) == 0:
        if frames == 1:
            return np.array([ipp])
        raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: {frames} frames but no "
                            "GridFrameOffsetVector")
    offsets = np.asarray([float(v) for v in gfov], dtype=float)
    if offsets.size != frames:
        raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: GridFrameOffsetVector has "
                            f"{offsets.size} values for {frames} frames")
    if abs(offsets[0]) < 1e-6:
        return ipp + float(normal[axis]) * offsets
    if axis == 2 and abs(offsets[0] - ipp) < 1e-3:
        return offsets
    raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: GridFrameOffsetVector starts at "
                        f"{offsets[0]:g} — neither 0 (relative) nor ImagePositionPatient z "
                        f"{ipp:g} (absolute)")


def _units_factor(ds: Dataset, values_max: float, prescription_gy: float | None) -> float:
    """Factor that turns scaled pixel values into Gy.

    RELATIVE doses are read as a fraction of the prescription (1.0 = 100 %) or, when the
    largest value exceeds 5, as a percentage of it; without a prescription they are an error.
    """
    units = str(getattr(ds, "DoseUnits", "GY")).upper()
    if units == "GY":
        return 1.0
    if units == "CGY":
        return 0.01
    if units == "RELATIVE":
        if not prescription_gy:
            raise DVHInputError(
                f"RTDOSE {ds.SOPInstanceUID} has DoseUnits RELATIVE; give a prescription dose "
                "(RTPLAN TargetPrescriptionDose or dvh.prescription_gy) to make it absolute")
        return prescription_gy / (100.0 if values_max > 5.0 else 1.0)
    raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: unknown DoseUnits {units!r}")


#: a direction cosine counts as along a patient axis when it is this close to ±1
AXIS_TOLERANCE = 1e-4


def _axis_of(direction: np.ndarray) -> int | None:
    """Patient axis (0 x, 1 y, 2 z) a unit direction lies along, or None when oblique."""
    a = int(np.argmax(np.abs(direction)))
    return a if abs(abs(direction[a]) - 1.0) < AXIS_TOLERANCE else None


def _orientation(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Row and column cosines, slice normal, and the patient axis of each array axis
    (frames, rows, columns); any axis-aligned ImageOrientationPatient (HFS, FFS, HFP, FFP,
    HFDL, HFDR, FFDL, FFDR, and sagittal or coronal stacks) is accepted, an oblique one is not."""
    try:
        iop = [float(v) for v in ds.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: missing or unreadable "
                            "ImageOrientationPatient") from None
    if len(iop) != 6:
        raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: ImageOrientationPatient has "
                            f"{len(iop)} values, not 6")
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    axes = (_axis_of(normal), _axis_of(col), _axis_of(row))
    if None in axes or len(set(axes)) != 3:
        shown = "\\".join(f"{v:g}" for v in iop)
        raise DVHInputError(
            f"RTDOSE {ds.SOPInstanceUID}: ImageOrientationPatient {shown} is oblique; only dose "
            "grids whose rows, columns and frames run along the patient axes are supported")
    return row, col, normal, axes  # type: ignore[return-value]


def load_dose(ds: Dataset, prescription_gy: float | None = None) -> DoseVolume:
    """One RTDOSE as a DoseVolume in Gy (DoseGridScaling applied, axes sorted ascending).

    The pixel array (frames, rows, columns) is transposed so that its axes run along patient
    z, y, x whatever the grid's orientation, then flipped where a direction is negative.
    """
    if getattr(ds, "Modality", "RTDOSE") != "RTDOSE":
        raise DVHInputError(f"expected an RTDOSE, got Modality {ds.Modality}")
    row, col, normal, axes = _orientation(ds)
    if int(ds.Rows) < 2 or int(ds.Columns) < 2:
        raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: a {ds.Rows} x {ds.Columns} dose grid "
                            "cannot be interpolated in-plane")
    pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pixels = pixels.reshape(frames, int(ds.Rows), int(ds.Columns))
    scaling = float(getattr(ds, "DoseGridScaling", 1.0) or 1.0)
    values = pixels * scaling
    values *= _units_factor(ds, float(values.max(initial=0.0)), prescription_gy)
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    # patient coordinate of every index along each array axis (frames, rows, columns)
    along = [
        _frame_positions(ds, frames, normal, axes[0]),
        ipp[axes[1]] + col[axes[1]] * row_spacing * np.arange(int(ds.Rows)),
        ipp[axes[2]] + row[axes[2]] * col_spacing * np.arange(int(ds.Columns)),
    ]
    order = [axes.index(a) for a in (2, 1, 0)]  # array axis holding patient z, y, x
    values = np.transpose(values, order)
    z, y, x = (along[k] for k in order)
    for axis, coords in ((2, x), (1, y), (0, z)):
        if coords.size > 1 and coords[1] < coords[0]:
            values = np.flip(values, axis=axis)
    x, y, z = np.sort(x), np.sort(y), np.sort(z)
    for name, a in (("x", x), ("y", y), ("z", z)):
        if a.size > 1 and np.any(np.diff(a) <= 0):
            raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: repeated {name} positions")
    for name, a in (("x", x), ("y", y)):
        if a.size < 2:
            raise DVHInputError(f"RTDOSE {ds.SOPInstanceUID}: a single dose plane along patient "
                                f"{name} cannot be interpolated")
    if z.size == 1:
        # a single dose plane stands for a slab of its SliceThickness
        half = float(getattr(ds, "SliceThickness", 0) or 1.0) / 2.0
        values = np.concatenate([values, values])
        z = np.array([z[0] - half, z[0] + half])
    return DoseVolume(values=np.ascontiguousarray(values), x=x, y=y, z=z,
                      frame_of_reference_uid=str(getattr(ds, "FrameOfReferenceUID", "")),
                      summation_type=str(getattr(ds, "DoseSummationType", "PLAN")).upper(),
                      sources=[str(ds.SOPInstanceUID)],
                      dvh_sequence=list(getattr(ds, "DVHSequence", None) or []),
                      referenced_plans=[str(r.ReferencedSOPInstanceUID) for r in
                                        getattr(ds, "ReferencedRTPlanSequence", None) or []
                                        if "ReferencedSOPInstanceUID" in r])


def resample(dose: DoseVolume, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Trilinear resampling of a dose volume onto the grid x, y, z; zero outside its grid."""
    from scipy.interpolate import RegularGridInterpolator

    interp = RegularGridInterpolator((dose.z, dose.y, dose.x), dose.values, method="linear",
                                     bounds_error=False, fill_value=0.0)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    pts = np.column_stack([zz.ravel(), yy.ravel(), xx.ravel()])
    return interp(pts).reshape(zz.shape)


def sum_doses(doses: list[DoseVolume]) -> DoseVolume:
    """Add RTDOSEs (e.g. primary + boost) on the grid of the one that covers most volume.

    Doses on the same grid add voxel by voxel; others are resampled trilinearly and count as 0
    outside their own grid, as a TPS dose grid is sized to contain all the dose of its plan.
    """
    if not doses:
        raise DVHInputError("no RTDOSE to sum")
    fors = {d.frame_of_reference_uid for d in doses}
    if len(fors) > 1:
        raise DVHInputError("RTDOSEs to sum lie on different FrameOfReferenceUIDs: "
                            + ", ".join(sorted(fors)))
    if len(doses) == 1:
        return doses[0]

    def extent(d: DoseVolume) -> float:
        return float(np.ptp(d.x) * np.ptp(d.y) * np.ptp(d.z))

    base = max(doses, key=extent)
    total = base.values.copy()
    for d in doses:
        if d is base:
            continue
        total += d.values if d.same_grid(base) else resample(d, base.x, base.y, base.z)
    return DoseVolume(values=total, x=base.x, y=base.y, z=base.z,
                      frame_of_reference_uid=base.frame_of_reference_uid,
                      summation_type="SUM", sources=[s for d in doses for s in d.sources],
                      referenced_plans=[p for d in doses for p in d.referenced_plans],
                      notes=[f"sum of {len(doses)} RTDOSEs"])


def select_dose(datasets: list[Dataset], prescription_gy: float | None = None,
                plans: list[Dataset] | None = None, sum_roles: tuple[str, ...] = ()) -> DoseVolume:
    """The course dose of the dose plan (``rtnode.courses.doseplan``) as one DoseVolume: the TPS
    plan sum, the plan in use, or the sum the data (or ``sum_roles``) call for. A course whose
    plans cannot be combined safely has no course dose: that is a DVHInputError naming them."""
    from rtnode.courses.doseplan import from_datasets

    if not datasets:
        raise DVHInputError("no RTDOSE found")
    plan = from_datasets(plans or [], datasets, sum_roles)
    chosen = plan.course
    if chosen is None:
        raise DVHInputError(plan.describe())
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    return sum_doses([load_dose(by_uid[u], prescription_gy) for u in chosen.rtdose])
