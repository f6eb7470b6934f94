"""The rtnode DVH engine: sub-voxel contour sampling, trilinear dose, exact slab integration.

For each ROI: its planes' polygons are rasterised on a fine lattice with exact per-row coverage
(``rasterize``); every plane's slab [z_lo, z_hi] is split at the dose frames it crosses; at both
ends of every piece the dose is interpolated trilinearly at every covered cell, together with
its in-plane gradient (``interpolate``); each cell piece then enters the histogram as a uniform
dose spread with the mean and variance of the dose over that piece of the cell (``histogram``) —
exact along z for the trilinear field, and along x and y for a dose linear across a cell. The
pitch adapts to the ROI, so a 0.5 cc sphere gets thousands of cells per plane while BODY is
sampled at the dose pixel, and planes are processed in chunks to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rtnode.dvh.config import DVHConfig
from rtnode.dvh.dose import DoseVolume
from rtnode.dvh.histogram import CumulativeDVH, DVHAccumulator
from rtnode.dvh.interpolate import axis_weights, frame_position, frames_on_lattice
from rtnode.dvh.rasterize import rasterize_stack, sampling_pitch
from rtnode.dvh.structures import ContourPlane, StructureROI, even_odd_area, polygon_area

AUTO_ALGORITHMS = frozenset({"AUTOMATIC", "SEMIAUTOMATIC"})


@dataclass
class RoiDVH:
    """One ROI's DVH and the numbers every metric is derived from.

    ``volume_cc`` is the contour-stack volume (whole ROI); the DVH, Dmin, Dmax and Dmean cover
    only the part inside the dose grid, ``covered_cc``.
    """

    roi_number: int
    roi_name: str
    interpreted_type: str
    source: str  # "manual" or "auto"
    engine: str
    volume_cc: float
    covered_cc: float
    dvh: CumulativeDVH
    dmin_gy: float = float("nan")
    dmax_gy: float = float("nan")
    dmean_gy: float = float("nan")
    skipped_contours: int = 0
    warnings: list[str] = field(default_factory=list)
    dose_source: str = ""  # which dose (docs/DVH.md, "Dose plan"): plan label, "plan sum", ...
    display_color: tuple[int, int, int] | None = None  # the RTSTRUCT's ROIDisplayColor

    @property
    def coverage(self) -> float:
        """Fraction of the ROI volume inside the dose grid (1.0 for a fully covered ROI)."""
        return self.covered_cc / self.volume_cc if self.volume_cc > 0 else 0.0

    @property
    def is_empty(self) -> bool:
        return self.volume_cc <= 0


def roi_source(roi: StructureROI) -> str:
    """"auto" for ROIs an algorithm drew (ROIGenerationAlgorithm), else "manual"."""
    return "auto" if roi.generation_algorithm.upper() in AUTO_ALGORITHMS else "manual"


#: lattice cells (planes x rows x columns) processed at once, which bounds memory: a BODY of
#: 200 planes is done in a few chunks of planes, a small ROI in one
CHUNK_CELLS = 500_000


def roi_extent(roi: StructureROI) -> tuple[np.ndarray, np.ndarray]:
    """In-plane bounding box (min x, min y), (max x, max y) of all the ROI's contours."""
    lo = np.min([p.min(axis=0) for pl in roi.planes for p in pl.polygons], axis=0)
    hi = np.max([p.max(axis=0) for pl in roi.planes for p in pl.polygons], axis=0)
    return lo, hi


def roi_pitch(roi: StructureROI, dose: DoseVolume, config: DVHConfig) -> float:
    """In-plane lattice pitch for this ROI (mm), never coarser than the dose pixel.

    About ``samples_per_plane`` cells across the largest cross-section; made coarser only if one
    plane's lattice over the ROI's bounding box would exceed CHUNK_CELLS (an ROI made of far
    apart islands).
    """
    largest = max((sum(polygon_area(p) for p in plane.polygons) for plane in roi.planes),
                  default=0.0)
    sx, sy, _ = dose.spacing
    coarsest = min(config.max_sample_spacing_mm, min(sx, sy))
    h = sampling_pitch(largest, config.samples_per_plane, config.min_sample_spacing_mm,
                       coarsest)
    if roi.planes:
        lo, hi = roi_extent(roi)
        h = max(h, float(np.sqrt(np.prod(hi - lo + 2 * h) / CHUNK_CELLS)))
    return h


def slab_cuts(planes: list[ContourPlane], dose_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per plane, the z positions that split its slab (clipped to the dose grid) at the dose
    frames inside it; along each piece between two cuts the dose is linear in z.

    Returns (cuts, valid): cuts[p] holds the cuts of plane p, padded with its last cut (pieces
    of zero length), valid[p] is False for a plane outside the dose grid's z range.
    """
    z_lo = np.array([pl.z_lo for pl in planes])
    z_hi = np.array([pl.z_hi for pl in planes])
    lo = np.maximum(z_lo, dose_z[0])
    hi = np.minimum(z_hi, dose_z[-1])
    valid = hi > lo
    hi = np.where(valid, hi, lo)
    first = np.searchsorted(dose_z, lo, side="right")  # first frame strictly above lo
    count = np.where(valid, np.searchsorted(dose_z, hi, side="left") - first, 0)
    width = int(count.max(initial=0)) + 2
    m = np.arange(width - 1)[None, :]
    inner = dose_z[np.minimum(first[:, None] + m, dose_z.size - 1)]
    cuts = np.column_stack([lo, np.where(m < count[:, None], inner, hi[:, None])])
    return cuts, valid


@dataclass
class _Totals:
    """Running sums over the chunks of one ROI."""

    volume_mm3: float = 0.0
    covered_cc: float = 0.0
    dose_cc: float = 0.0  # sum of dose x volume, for Dmean
    dmin: float = float("inf")
    dmax: float = float("-inf")


def compute_roi_dvh(roi: StructureROI, dose: DoseVolume, config: DVHConfig) -> RoiDVH:
    """DVH of one ROI whose planes already carry their slabs (``assign_slabs``).

    Planes are processed in chunks that share one lattice; within a chunk the loops run over
    slab pieces (two or three per plane), never over points.
    """
    result = RoiDVH(roi_number=roi.number, roi_name=roi.name,
                    interpreted_type=roi.interpreted_type, source=roi_source(roi),
                    engine="rtnode", volume_cc=0.0, covered_cc=0.0,
                    dvh=CumulativeDVH(config.bin_width_gy, np.zeros(1)),
                    skipped_contours=roi.skipped_contours, warnings=list(roi.warnings),
                    display_color=roi.display_color)
    if roi.is_empty:
        return result
    h = roi_pitch(roi, dose, config)
    lo, hi = roi_extent(roi)
    per_plane = int(np.prod(np.ceil((hi - lo) / h) + 2))
    step = max(1, CHUNK_CELLS // max(per_plane, 1))
    acc = DVHAccumulator(config.bin_width_gy, dose.max_gy)
    totals = _Totals()
    for start in range(0, len(roi.planes), step):
        _add_planes(roi.planes[start:start + step], dose, h, acc, totals)
    result.volume_cc = totals.volume_mm3 / 1000.0
    result.covered_cc = totals.covered_cc
    if totals.covered_cc > 0:
        result.dvh = acc.result()
        result.dmin_gy, result.dmax_gy = totals.dmin, totals.dmax
        result.dmean_gy = totals.dose_cc / totals.covered_cc
    return result


def _bounds_on_lattice(dose: DoseVolume, k0: int, k1: int, lattice, h: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per dose frame interval k0.. and lattice cell: the lowest and highest dose-grid value
    of the dose-grid cells the lattice cell overlaps (those under its two x and two y edges),
    which bound the trilinear dose anywhere in it."""
    range_lo, range_hi = dose.voxel_range
    frames = slice(k0, min(k1, range_lo.shape[0] - 1) + 1)
    ix = [axis_weights(dose.x, lattice.x_centres + s * 0.5 * h)[0] for s in (-1, 1)]
    iy = [axis_weights(dose.y, lattice.y_centres + s * 0.5 * h)[0] for s in (-1, 1)]
    r0, r1 = int(iy[0].min()), int(iy[1].max()) + 1
    c0, c1 = int(ix[0].min()), int(ix[1].max()) + 1
    sub_lo, sub_hi = range_lo[frames, r0:r1, c0:c1], range_hi[frames, r0:r1, c0:c1]
    a, b = ix[0] - c0, ix[1] - c0
    lo, hi = sub_lo[:, :, a], sub_hi[:, :, a]
    if np.any(a != b):
        lo, hi = np.minimum(lo, sub_lo[:, :, b]), np.maximum(hi, sub_hi[:, :, b])
    a, b = iy[0] - r0, iy[1] - r0
    lo_y, hi_y = lo[:, a], hi[:, a]
    if np.any(a != b):
        lo_y, hi_y = np.minimum(lo_y, lo[:, b]), np.maximum(hi_y, hi[:, b])
    return lo_y, hi_y


def _add_planes(planes: list[ContourPlane], dose: DoseVolume, h: float, acc: DVHAccumulator,
                totals: _Totals) -> None:
    """Rasterise a chunk of planes on one lattice and add its dose segments to ``acc``."""
    lattice = rasterize_stack([pl.polygons for pl in planes], h)
    # rows are sampled at their centre line (midpoint rule), which is O(h) off on edges that run
    # along x (a rectangle); every plane's coverage is scaled to its exact even-odd area
    sampled = lattice.area_mm2()
    exact = np.array([even_odd_area(pl.polygons) for pl in planes])
    scale = np.where(sampled > 0, exact / np.where(sampled > 0, sampled, 1.0), 1.0)
    # several polygons: even_odd_area assumes nesting, so crossing contours (which the lattice
    # fills correctly) would be mis-scaled; only a correction the size the midpoint rule can
    # err by (half a row along every edge: perimeter x h / 2) is applied
    several = np.array([len(pl.polygons) > 1 for pl in planes])
    if several.any():
        perimeter = np.array([sum(float(np.sum(np.hypot(*np.diff(np.vstack([q, q[:1]]),
                                                                     axis=0).T)))
                                  for q in pl.polygons) if len(pl.polygons) > 1 else 0.0
                              for pl in planes])
        scale[several & (np.abs(exact - sampled) > 0.5 * perimeter * h)] = 1.0
    if np.any(np.abs(scale - 1.0) > 1e-12):
        lattice.coverage *= scale[:, None, None]
    thickness = np.array([pl.thickness for pl in planes])
    totals.volume_mm3 += float(lattice.area_mm2() @ thickness)

    z_cut, valid = slab_cuts(planes, dose.z)
    if not valid.any():
        return
    width = z_cut.shape[1]
    k_cut, f_cut = frame_position(dose, z_cut)
    k_base = k_cut[:, 0]
    span = int((k_cut - k_base[:, None]).max()) + 2  # frames each plane needs
    k0 = int(k_base[valid].min())
    k1 = min(int(k_base.max()) + span - 1, dose.z.size - 1)
    frames, grad_x, grad_y, inside = frames_on_lattice(dose, k0, k1, lattice.x_centres,
                                                       lattice.y_centres)

    usable = (lattice.coverage > 0) & inside[None, :, :] & valid[:, None, None]
    p, j, i = np.nonzero(usable)
    if p.size == 0:
        return
    area = lattice.coverage[p, j, i] * (h * h)
    flat = frames.reshape(frames.shape[0], -1)
    cell = j * frames.shape[2] + i
    # dose of every cell at the frames its plane needs: span gathers, not one per piece end
    rel = np.minimum(k_base[p][None, :] - k0 + np.arange(span)[:, None], frames.shape[0] - 1)
    n = p.size
    at_frame = np.take(flat, rel * flat.shape[1] + cell[None, :]).ravel()  # (span x cells)
    # in-plane: the dose is taken at the centroid of the covered part of the cell and spread
    # over the covered width along x and the row height along y (linear across the cell)
    base = rel[0] * flat.shape[1] + cell
    gx = np.take(grad_x, base)
    gy = np.take(grad_y, base)
    cov = lattice.coverage[p, j, i]
    shift = lattice.offset[p, j, i] * gx
    spread2 = (h * cov * gx) ** 2 + (h * gy) ** 2  # squared widths of the in-plane ranges
    cols = np.arange(n)

    def dose_at_cut(q: int) -> np.ndarray:
        k = (k_cut[:, q] - k_base)[p]
        f = f_cut[p, q]
        lower = np.take(at_frame, k * n + cols)
        upper = np.take(at_frame, np.minimum(k + 1, span - 1) * n + cols)
        return lower + (upper - lower) * f

    los, his, ws, mids = [], [], [], []
    d_prev = dose_at_cut(0)
    # the trilinear dose inside a dose-grid cell lies between its 8 corner values: they bound
    # each segment, so a spread never reaches past a peak (a hot voxel) or below zero
    bound_lo_frames, bound_hi_frames = _bounds_on_lattice(dose, k0, k1, lattice, h)
    n_lattice = bound_lo_frames.shape[1] * bound_lo_frames.shape[2]
    for q in range(1, width):
        dz_plane = z_cut[:, q] - z_cut[:, q - 1]  # 0 for padding
        if not (dz_plane[valid] > 0).any():
            break
        d_next = dose_at_cut(q)
        dz = dz_plane[p]
        # one uniform segment with the mean and variance of the cell piece's dose: exact when
        # the dose varies along one axis, close when several add (a sum of uniform spreads)
        mid = 0.5 * (d_prev + d_next) + shift
        half = 0.5 * np.sqrt((d_next - d_prev) ** 2 + spread2)
        weight = area * (dz / 1000.0)
        # the dose-grid cell this piece lies in: frames by the piece's middle, in-plane by the
        # lattice cell's centre
        k_mid, _ = frame_position(dose, 0.5 * (z_cut[:, q - 1] + z_cut[:, q]))
        at = (np.minimum(k_mid, bound_lo_frames.shape[0] - 1 + k0) - k0)[p] * n_lattice + cell
        bound_lo = np.take(bound_lo_frames, at)
        bound_hi = np.take(bound_hi_frames, at)
        keep = dz > 0
        if not keep.all():
            mid, half, weight = mid[keep], half[keep], weight[keep]
            bound_lo, bound_hi = bound_lo[keep], bound_hi[keep]
        mids.append(mid)  # a blend of sampled doses: Dmean stays exact for a linear dose
        los.append(np.clip(mid - half, bound_lo, bound_hi))
        his.append(np.clip(mid + half, bound_lo, bound_hi))
        ws.append(weight)
        d_prev = d_next
    lo, hi, mid = np.concatenate(los), np.concatenate(his), np.concatenate(mids)
    w = np.concatenate(ws)
    acc.add(lo, hi, w)
    covered = float(w.sum())
    if covered > 0:
        totals.covered_cc += covered
        totals.dose_cc += float(np.dot(w, mid))
        totals.dmin = min(totals.dmin, float(lo.min()))
        totals.dmax = max(totals.dmax, float(hi.max()))
