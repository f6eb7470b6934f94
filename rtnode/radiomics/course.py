"""Radiomics of one course: the image, its structure sets by source, the ROIs to extract.

Shared by the fan-out stage (ROIs grouped into a few balanced parts per worker), the standalone ``rtnode radiomics`` command and
the benchmark (all ROIs in one process), so that all three extract exactly the same thing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rtnode.radiomics.config import RadiomicsConfig
from rtnode.radiomics.extract import RoiResult, extract_roi, extractor
from rtnode.radiomics.images import series_image
from rtnode.radiomics.masks import contour_counts, rtstruct_masks
from rtnode.radiomics.params import load_params, params_path, small_footprint
from rtnode.radiomics.selection import matches_any, voxel_limit_reason
from rtnode.limits import deadline

#: an ROI is named "<source>:<ROI name>"; a part is one such name, or a JSON list of several
PART_SEPARATOR = ":"


@dataclass
class CourseImage:
    """The planning image of a course and the structure sets drawn on it, by source."""

    modality: str
    datasets: list[Dataset]
    structure_sets: dict[str, list[Dataset]] = field(default_factory=dict)  # source -> RTSTRUCTs
    _image: sitk.Image | None = None

    @property
    def image(self) -> sitk.Image:
        if self._image is None:
            self._image = series_image(self.datasets)
        return self._image

    def planned_rois(self, config: RadiomicsConfig) -> tuple[list[str], list[RoiResult]]:
        """Part names to extract, and the ROIs skipped by name or for having no contour."""
        parts: list[str] = []
        skipped: list[RoiResult] = []
        for source in config.sources:
            seen: set[str] = set()
            for rtstruct in self.structure_sets.get(source, []):
                for name, n in contour_counts(rtstruct).items():
                    if name in seen:
                        continue
                    seen.add(name)
                    if matches_any(name, config.skip_rois):
                        skipped.append(RoiResult(name, source, "skipped", "matches skip_rois"))
                    elif n == 0:
                        skipped.append(RoiResult(name, source, "skipped", "ROI has no contours"))
                    else:
                        parts.append(f"{source}{PART_SEPARATOR}{name}")
        return parts, skipped

    def roi_sizes(self, parts: Sequence[str]) -> dict[str, float]:
        """Each ROI's contoured area summed over its contours (mm², proportional to its volume
        on evenly spaced slices): the cost estimate that balances the fan-out, read from the
        contour points without rasterising anything."""
        areas: dict[str, dict[str, float]] = {}
        for source, sets in self.structure_sets.items():
            wanted = {split_part(p)[1] for p in parts if split_part(p)[0] == source}
            merged: dict[str, float] = {}
            for rtstruct in sets:
                for name, area in contour_areas(rtstruct, wanted - set(merged)).items():
                    merged.setdefault(name, area)
            areas[source] = merged
        return {p: areas.get(split_part(p)[0], {}).get(split_part(p)[1], 0.0) for p in parts}

    def mask(self, source: str, roi: str) -> np.ndarray:
        for rtstruct in self.structure_sets.get(source, []):
            if roi in contour_counts(rtstruct):
                return rtstruct_masks(rtstruct, self.image, self.datasets, [roi])[roi]
        raise KeyError(f"no ROI named {roi!r} in the {source} structure set(s)")


def split_part(part: str) -> tuple[str, str]:
    source, _, roi = part.partition(PART_SEPARATOR)
    return source, roi


def contour_areas(rtstruct: Dataset, names: set[str] | None = None) -> dict[str, float]:
    """ROI name -> summed area (mm²) of its planar contours (Newell's formula, any plane), for
    the ROIs in ``names`` (all when None). Contour points are parsed from the raw element bytes:
    pydicom's per-number DS objects would make this cost more than the split it serves."""
    rois = {int(i.ROINumber): str(getattr(i, "ROIName", "") or f"ROI{i.ROINumber}")
            for i in getattr(rtstruct, "StructureSetROISequence", None) or []}
    out: dict[str, float] = {}
    for item in getattr(rtstruct, "ROIContourSequence", None) or []:
        name = rois.get(int(getattr(item, "ReferencedROINumber", -1)))
        if name is None or (names is not None and name not in names):
            continue
        total = 0.0
        for contour in getattr(item, "ContourSequence", None) or []:
            xyz = _contour_points(contour)
            if xyz is not None:
                total += 0.5 * float(np.linalg.norm(np.cross(xyz, np.roll(xyz, -1, axis=0))
                                                    .sum(axis=0)))
        out[name] = total
    return out


def _contour_points(contour: Dataset) -> np.ndarray | None:
    if "ContourData" not in contour:
        return None
    raw = contour.get_item("ContourData")
    value = getattr(raw, "value", None)
    try:
        if isinstance(value, (bytes, bytearray)):
            points = np.array(bytes(value).split(b"\\"), dtype=float)
        else:
            points = np.asarray(contour.ContourData, dtype=float)
    except ValueError:
        return None
    if points.size < 9 or points.size % 3:
        return None
    return points.reshape(-1, 3)


def group_rois(sizes: dict[str, float], n_parts: int) -> list[list[str]]:
    """Longest-processing-time-first packing: ROIs from the largest down, each into the part
    with the least work so far; parts come back largest first (the order they are queued),
    each with its ROIs largest first. Fewer ROIs than parts: one ROI per part."""
    n_parts = max(1, min(n_parts, len(sizes)))
    order = sorted(sizes, key=lambda r: (-sizes[r], r))
    parts: list[list[str]] = [[] for _ in range(n_parts)]
    load = [0.0] * n_parts
    for roi in order:
        i = min(range(n_parts), key=lambda k: (load[k], k))
        parts[i].append(roi)
        load[i] += max(sizes[roi], 1.0)  # an ROI of no area still costs a mask and a lookup
    ranked = sorted(range(n_parts), key=lambda k: (-load[k], k))
    return [parts[k] for k in ranked if parts[k]]


def part_name(rois: Sequence[str]) -> str:
    """One ROI keeps its plain "<source>:<ROI>" name; several become a JSON list."""
    return rois[0] if len(rois) == 1 else json.dumps(list(rois), ensure_ascii=False)


def part_rois(part: str) -> list[str]:
    """The "<source>:<ROI>" names a part holds (plain names never start with '[')."""
    if part.startswith("["):
        return [str(r) for r in json.loads(part)]
    return [part]


def course_params(modality: str, config: RadiomicsConfig, small: bool = False) -> dict:
    params = load_params(params_path(modality, config.params_ct, config.params_mr))
    return small_footprint(params) if small else params


def extract_part(course: CourseImage, part: str, config: RadiomicsConfig,
                 small: bool = False, extractor_obj=None) -> RoiResult:
    """One ROI, bounded by ``config.roi_timeout_seconds``; skips outside the voxel limits.

    Exceptions other than a skip propagate: the caller (a stage part, or the sequential
    command) decides whether that fails one task or is recorded as a failed row.
    """
    source, roi = split_part(part)
    start = time.perf_counter()
    mask = course.mask(source, roi)
    voxels = int(np.count_nonzero(mask))
    reason = voxel_limit_reason(voxels, config.min_voxels, config.max_voxels)
    if reason is not None:
        return RoiResult(roi, source, "skipped", reason, voxels)
    params = course_params(course.modality, config, small)
    with deadline(config.roi_timeout_seconds, f"ROI {roi!r}"):
        features = extract_roi(course.image, mask, params, extractor_obj)
    return RoiResult(roi, source, "done", "", voxels, time.perf_counter() - start, features)


def extract_course(course: CourseImage, config: RadiomicsConfig) -> list[RoiResult]:
    """Every ROI one after the other in this process (the standalone command, the benchmark's
    baseline); a failing ROI is recorded with its reason and the rest go on."""
    parts, results = course.planned_rois(config)
    ex = extractor(course_params(course.modality, config))
    for part in parts:
        source, roi = split_part(part)
        try:
            results.append(extract_part(course, part, config, extractor_obj=ex))
        except Exception as exc:  # one bad ROI must not cost the others their features
            results.append(RoiResult(roi, source, "failed", f"{type(exc).__name__}: {exc}"))
    return results


def folder_course(folder: Path, rtstructs: Sequence[Path] = ()) -> CourseImage:
    """A course folder (files found by modality); RTSTRUCTs marked AUTOMATIC count as auto."""
    import pydicom

    from rtnode.radiomics.images import find_course_files, image_series_of

    files = find_course_files(folder)
    modality, datasets = image_series_of(files)
    course = CourseImage(modality, datasets)
    for path in (list(rtstructs) or files.get("RTSTRUCT", [])):
        ds = pydicom.dcmread(path)
        course.structure_sets.setdefault(structure_set_source(ds), []).append(ds)
    return course


def structure_set_source(rtstruct: Dataset) -> str:
    """'auto' when every ROI says ROIGenerationAlgorithm AUTOMATIC, else 'manual'."""
    algos = {str(getattr(i, "ROIGenerationAlgorithm", "") or "").upper()
             for i in getattr(rtstruct, "StructureSetROISequence", None) or []}
    return "auto" if algos == {"AUTOMATIC"} else "manual"
