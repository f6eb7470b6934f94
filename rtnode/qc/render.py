"""Pictures for the report: axial, coronal and sagittal CT slices through the main target with
every ROI's contour and a dose colour wash, and the DVH plot; PNG bytes, nothing on disk.

Every volume (CT, masks, dose) is first put in one display frame whatever the scan's
orientation or patient position: array axes (z, y, x) increasing towards the patient's
superior, posterior and left (DICOM LPS). Axial slices are then shown as a physicist reads them
(anterior up, patient's left on the viewer's right), coronal and sagittal with superior up.
Image and contours are drawn in the same array coordinates, so a contour can only land on its
own anatomy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from rtnode.colours import distinct_colours
from rtnode.qc.course import QCCourse
from rtnode.radiomics.selection import matches_any

TARGETS = ("PTV*", "CTV*", "GTV*")
#: the dose wash: perceptually ordered, readable over grey CT (never jet)
DOSE_CMAP = "plasma"
#: wash drawn above this fraction of the maximum dose
WASH_FROM = 0.1


@dataclass(frozen=True)
class RoiStyle:
    """How one ROI is drawn in every figure of the report (and keyed in its legend table)."""

    source: str  # manual / auto
    name: str
    rgb: tuple[float, float, float]  # 0..1
    from_dicom: bool  # ROIDisplayColor, else a palette colour

    @property
    def label(self) -> str:
        return f"{self.name} (auto)" if self.source == "auto" else self.name

    @property
    def linestyle(self) -> str:
        return "--" if self.source == "auto" else "-"

    @property
    def hex(self) -> str:
        return "#" + "".join(f"{round(255 * c):02x}" for c in self.rgb)


def roi_styles(course: QCCourse, extra: list[tuple[str, str]] = ()) -> dict[tuple[str, str],
                                                                             RoiStyle]:
    """(source, name) -> style for every ROI of the course's structure sets (manual first) and
    any ``extra`` (source, name) only the DVH tables know; ROIDisplayColor wins."""
    keys: list[tuple[str, str]] = []
    for source in ("manual", "auto"):
        for ds in course.structure_sets.get(source, []):
            for item in getattr(ds, "StructureSetROISequence", None) or []:
                key = (source, str(getattr(item, "ROIName", "") or f"ROI{item.ROINumber}"))
                if key not in keys:
                    keys.append(key)
    keys += [k for k in extra if k not in keys]
    dicom = course.roi_colours()
    fallback = iter(distinct_colours(len(keys)))
    styles = {}
    for key in keys:
        rgb = dicom.get(key)
        colour = tuple(v / 255.0 for v in rgb) if rgb else next(fallback)
        styles[key] = RoiStyle(key[0], key[1], colour, rgb is not None)  # type: ignore[arg-type]
    return styles


# -- one display frame ------------------------------------------------------------------------

def display_axes(image) -> tuple[list[int], list[bool]] | None:
    """For numpy arrays (k, j, i) of ``image``'s grid: the transpose order and flips that give
    (z, y, x) increasing towards superior, posterior, left; None for an oblique image."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)  # column a: index axis a
    order, flips = [], []
    for p in (2, 1, 0):  # patient z, y, x
        a = int(np.argmax(np.abs(d[p])))
        if abs(abs(d[p, a]) - 1.0) > 1e-3:
            return None
        order.append(2 - a)
        flips.append(bool(d[p, a] < 0))
    return order, flips


def to_display(arr: np.ndarray, axes: tuple[list[int], list[bool]]) -> np.ndarray:
    order, flips = axes
    out = np.transpose(arr, order)
    for ax, flip in enumerate(flips):
        if flip:
            out = np.flip(out, ax)
    return out


def display_coordinates(image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient x, y, z (mm, increasing) of the display frame's voxel centres."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    origin, spacing, size = image.GetOrigin(), image.GetSpacing(), image.GetSize()
    coords = []
    for p in (0, 1, 2):
        a = int(np.argmax(np.abs(d[p])))
        coords.append(np.sort(origin[p] + d[p, a] * spacing[a] * np.arange(size[a])))
    return coords[0], coords[1], coords[2]


def display_spacing(image) -> tuple[float, float, float]:
    """(x, y, z) spacing (mm) of the display frame."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    sp = image.GetSpacing()
    return tuple(float(sp[int(np.argmax(np.abs(d[p])))]) for p in (0, 1, 2))  # type: ignore


def dose_planes(course: QCCourse, index: dict[int, int]) -> tuple[dict[int, np.ndarray], float]:
    """The course dose (Gy) on the three display planes through ``index`` (display axis ->
    slice) and the dose grid's maximum; ({}, 0) without RTDOSE or when the dose engine refuses
    it (the dose checks report why). Only the three planes are resampled, not the volume."""
    if not course.doses:
        return {}, 0.0
    from rtnode.dvh.dose import resample, select_dose

    try:
        dose = select_dose(course.doses)
    except Exception:  # a dose the DVH engine refuses is reported by the dose checks
        return {}, 0.0
    x, y, z = display_coordinates(course.image)
    planes = {0: resample(dose, x, y, z[index[0]:index[0] + 1])[0],
              1: resample(dose, x, y[index[1]:index[1] + 1], z)[:, 0, :],
              2: resample(dose, x[index[2]:index[2] + 1], y, z)[:, :, 0]}
    return planes, float(np.max(dose.values)) if dose.values.size else 0.0


def _focus(course: QCCourse, masks: dict, shape: tuple[int, ...],
           roi: tuple[str, str] | None = None) -> tuple[int, int, int]:
    """(z, y, x) display voxel at the centroid of ``roi`` (source, name) when given, else of
    the first target, else the volume centre."""
    if roi is not None and roi in masks:
        return tuple(int(round(float(v.mean()))) for v in np.nonzero(masks[roi]))  # type: ignore
    for pattern in TARGETS:
        for (source, name), mask in masks.items():
            if matches_any(name, [pattern]) and mask.any():
                return tuple(int(round(float(v.mean()))) for v in np.nonzero(mask))  # type: ignore
    return shape[0] // 2, shape[1] // 2, shape[2] // 2


#: (title, display axis cut, imshow origin, edge letters: left, right, top, bottom)
VIEWS = [("Axial", 0, "upper", ("R", "L", "A", "P")),
         ("Coronal", 1, "lower", ("R", "L", "S", "I")),
         ("Sagittal", 2, "lower", ("A", "P", "S", "I"))]


def overlays_figure(course: QCCourse, window: tuple[float, float],
                    focus: tuple[str, str] | None = None):
    """The matplotlib figure: axial | coronal | sagittal through the first target, each ROI's
    contour in its colour (dashed: auto-segmentation), dose wash with a colour bar, and a legend
    below the panels holding every ROI. Each contour set carries its ROI label as ``gid``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    axes_map = display_axes(course.image)
    if axes_map is None:
        raise ValueError("oblique image orientation: no overlay drawn")
    ct = to_display(sitk.GetArrayViewFromImage(course.image), axes_map)
    sx, sy, sz = display_spacing(course.image)
    masks = {(s, n): to_display(m, axes_map)
             for s in ("manual", "auto") for n, m in course.masks(s).items() if m.any()}
    styles = roi_styles(course)
    z, y, x = _focus(course, masks, ct.shape, focus)
    index = {0: z, 1: y, 2: x}
    aspect = {0: sy / sx, 1: sz / sx, 2: sz / sy}
    drawn = [styles[k] for k in styles if k in masks]
    ncol = 6
    legend_rows = -(-len(drawn) // ncol)
    fig = plt.figure(figsize=(16, 5.6 + 0.22 * legend_rows), dpi=90)
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 0.04],
                            height_ratios=[5.2, 0.2 + 0.22 * legend_rows], hspace=0.08,
                            wspace=0.06, left=0.01, right=0.95, top=0.9, bottom=0.01)
    dose, dmax = dose_planes(course, index)
    norm = Normalize(0.0, dmax or 1.0)
    for col, (label, axis, origin, letters) in enumerate(VIEWS):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(np.take(ct, index[axis], axis=axis), cmap="gray", vmin=window[0],
                  vmax=window[1], aspect=aspect[axis], origin=origin, interpolation="nearest")
        if dmax > 0:
            plane = np.ma.masked_less(dose[axis], WASH_FROM * dmax)
            ax.imshow(plane, cmap=DOSE_CMAP, norm=norm, alpha=0.4, aspect=aspect[axis],
                      origin=origin, interpolation="nearest")
        for key, mask in masks.items():
            plane = np.take(mask, index[axis], axis=axis)
            if plane.any():
                st = styles[key]
                # default contour origin: Z[r, c] at (c, r), exactly where imshow puts pixel
                # (r, c) for either imshow origin, so contours sit on their own anatomy
                cs = ax.contour(plane.astype(float), levels=[0.5], colors=[st.rgb],
                                linewidths=1.3, linestyles=st.linestyle)
                cs.set_gid(st.label)
        ax.set_title(f"{label} (slice {index[axis] + 1} of {ct.shape[axis]})")
        _edge_letters(ax, letters)
        ax.set_xticks([])
        ax.set_yticks([])
    if dmax > 0:
        cax = fig.add_subplot(grid[0, 3])
        fig.colorbar(ScalarMappable(norm=norm, cmap=DOSE_CMAP), cax=cax, label="Dose (Gy)")
    lax = fig.add_subplot(grid[1, :])
    lax.axis("off")
    if drawn:
        handles = [plt.Line2D([], [], color=st.rgb, ls=st.linestyle, lw=2, label=st.label)
                   for st in drawn]
        lax.legend(handles=handles, loc="upper center", ncol=min(ncol, len(handles)),
                   fontsize=8, frameon=False, mode="expand")
    title = "Contours and dose wash" + (f" (max {dmax:.1f} Gy, wash from "
                                        f"{100 * WASH_FROM:.0f} %)" if dmax else " (no dose)")
    fig.suptitle(title)
    return fig


def _edge_letters(ax, letters: tuple[str, str, str, str]) -> None:
    kw = dict(transform=ax.transAxes, color="yellow", fontsize=10, fontweight="bold")
    left, right, top, bottom = letters
    ax.text(0.01, 0.5, left, ha="left", va="center", **kw)
    ax.text(0.99, 0.5, right, ha="right", va="center", **kw)
    ax.text(0.5, 0.99, top, ha="center", va="top", **kw)
    ax.text(0.5, 0.01, bottom, ha="center", va="bottom", **kw)


def overlays_png(course: QCCourse, window: tuple[float, float]) -> bytes:
    """One PNG: axial | coronal | sagittal, contours of every ROI, dose wash above 10 %."""
    return _png(overlays_figure(course, window), tight=False)  # the grid already fits


def dvh_figure(course: QCCourse):
    """Cumulative DVHs of every ROI and source in the dvh tables (the dvh stage's when it wrote
    them), in the same colours as the contours, legend outside the plot holding every curve,
    labelled prescription line. None without DVH tables."""
    tables = course.dvh_tables
    if tables is None or tables.curves.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = tables.curves
    groups = {(str(s), str(n)): g for (n, s), g in
              curves.groupby(["roi_name", "source"], observed=True, sort=False)}
    styles = roi_styles(course, list(groups))
    order = [k for k in styles if k in groups]
    ncol = 1 + len(order) // 28
    fig, ax = plt.subplots(figsize=(9 + 2.6 * ncol, 6), dpi=100)
    for key in order:
        g = groups[key]
        st = styles[key]
        ax.plot(np.asarray(g["dose_gy"], float), np.asarray(g["volume_pct"], float),
                st.linestyle, color=st.rgb, lw=1.2, label=st.label, gid=st.label)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_ylim(0, 101)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    rx = tables.prescription_gy
    if rx:
        ax.axvline(rx, color="k", lw=0.9, ls=":", label=f"Prescription {rx:g} Gy")
        ax.annotate(f"Rx {rx:g} Gy", (rx, 100), xytext=(3, -12), textcoords="offset points",
                    fontsize=8)
    ax.set_title(f"Cumulative DVH ({tables.origin})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncol=ncol,
              frameon=False, borderaxespad=0.0)
    fig.tight_layout()
    return fig


def dvh_png(course: QCCourse) -> bytes | None:
    fig = dvh_figure(course)
    return None if fig is None else _png(fig, tight=True)  # the legend outside must fit


def _png(fig, tight: bool) -> bytes:
    """PNG bytes; 'tight' costs a second draw, so only figures with outside legends use it.
    zlib level 3: a third of the encoding time of the default for a few % more bytes."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight" if tight else None,
                pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return buf.getvalue()
