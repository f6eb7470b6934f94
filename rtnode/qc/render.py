"""Pictures for the report: axial, coronal and sagittal CT slices through the main target with
every ROI's contour and a dose colour wash, and the DVH plot; PNG bytes, nothing on disk."""

from __future__ import annotations

import io

import numpy as np

from rtnode.qc.course import QCCourse
from rtnode.radiomics.selection import matches_any

TARGETS = ("PTV*", "CTV*", "GTV*")


def _focus(course: QCCourse) -> tuple[int, int, int]:
    """(k, j, i) voxel at the centroid of the first target, else the image centre."""
    for pattern in TARGETS:
        for source in ("manual", "auto"):
            for name, mask in course.masks(source).items():
                if matches_any(name, [pattern]) and mask.any():
                    return tuple(int(round(float(v.mean()))) for v in np.nonzero(mask))
    size = course.image.GetSize()
    return size[2] // 2, size[1] // 2, size[0] // 2


def dose_on_image(course: QCCourse) -> np.ndarray | None:
    """The course dose (Gy) resampled on the image grid; None without RTDOSE."""
    if not course.doses:
        return None
    from rtnode.dvh.dose import resample, select_dose

    try:
        dose = select_dose(course.doses)
    except Exception:  # a dose the DVH engine refuses is reported by the dose checks
        return None
    img = course.image
    size = img.GetSize()
    origin = np.asarray(img.GetOrigin())
    sp = np.asarray(img.GetSpacing())
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    if not np.allclose(direction, np.eye(3), atol=1e-3):
        return None  # oblique image: no wash rather than a wrong one
    x = origin[0] + np.arange(size[0]) * sp[0]
    y = origin[1] + np.arange(size[1]) * sp[1]
    z = origin[2] + np.arange(size[2]) * sp[2]
    return resample(dose, x, y, z)


def _view(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(arr, index, axis=axis)


def overlays_png(course: QCCourse, window: tuple[float, float]) -> bytes:
    """One PNG: axial | coronal | sagittal, contours of every ROI, dose wash above 10 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    ct = sitk.GetArrayViewFromImage(course.image)
    sx, sy, sz = course.image.GetSpacing()
    dose = dose_on_image(course)
    k, j, i = _focus(course)
    views = [("Axial", 0, k, sy / sx), ("Coronal", 1, j, sz / sx), ("Sagittal", 2, i, sz / sy)]
    rois = [(f"{n} ({s})" if s == "auto" else n, m, "--" if s == "auto" else "-")
            for s in ("manual", "auto") for n, m in course.masks(s).items() if m.any()]
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(rois), 1)))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), dpi=90)
    dmax = float(dose.max()) if dose is not None and dose.size else 0.0
    for ax, (label, axis, index, aspect) in zip(axes, views):
        ax.imshow(_view(ct, axis, index), cmap="gray", vmin=window[0], vmax=window[1],
                  aspect=aspect, origin="upper" if axis == 0 else "lower")
        if dose is not None and dmax > 0:
            d = np.ma.masked_less(_view(dose, axis, index), 0.1 * dmax)
            ax.imshow(d, cmap="jet", alpha=0.35, vmin=0, vmax=dmax, aspect=aspect,
                      origin="upper" if axis == 0 else "lower")
        for (name, mask, style), colour in zip(rois, colours):
            plane = _view(mask, axis, index)
            if plane.any():
                ax.contour(plane.astype(float), levels=[0.5], colors=[colour], linewidths=1.2,
                           linestyles=style, origin="upper" if axis == 0 else "lower")
        ax.set_title(f"{label} (slice {index})")
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, ls=s, label=n) for (n, _, s), c in zip(rois, colours)]
    if handles:
        fig.legend(handles=handles[:20], loc="lower center", ncol=min(len(handles), 8),
                   fontsize=8)
    title = "Contours and dose wash" + (f" (max {dmax:.1f} Gy)" if dmax else " (no dose)")
    fig.suptitle(title)
    return _png(fig)


def dvh_png(course: QCCourse) -> bytes | None:
    results = course.dvh
    if not results:
        return None
    import tempfile
    from pathlib import Path

    from rtnode.dvh.outputs import plot_dvhs

    with tempfile.TemporaryDirectory() as tmp:
        path = plot_dvhs(results, Path(tmp) / "dvh.png")
        return path.read_bytes()


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
