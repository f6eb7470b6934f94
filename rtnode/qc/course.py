"""What QC looks at: one course's image series, structure sets by source, doses, plans and the
course detector's verdict — gathered from a node's course revision or from a folder of files."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rtnode.radiomics.course import structure_set_source
from rtnode.radiomics.images import find_course_files, series_image, sort_slices
from rtnode.radiomics.masks import rtstruct_masks


@dataclass
class QCCourse:
    modality: str
    images: list[Dataset]
    structure_sets: dict[str, list[Dataset]] = field(default_factory=dict)  # manual / auto
    doses: list[Dataset] = field(default_factory=list)
    plans: list[Dataset] = field(default_factory=list)
    verdict: dict[str, Any] | None = None  # None: no course detector (standalone)
    ids: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = sort_slices(self.images) if self.images else []
        self._masks: dict[str, dict[str, np.ndarray]] = {}

    @cached_property
    def image(self) -> sitk.Image:
        return series_image(self.images)

    def masks(self, source: str) -> dict[str, np.ndarray]:
        """Every ROI of the source's structure set(s) on the image grid (first name wins)."""
        if source not in self._masks:
            out: dict[str, np.ndarray] = {}
            for rtstruct in self.structure_sets.get(source, []):
                for name, mask in rtstruct_masks(rtstruct, self.image, self.images).items():
                    out.setdefault(name, mask)
            self._masks[source] = out
        return self._masks[source]

    @property
    def voxel_cc(self) -> float:
        sx, sy, sz = self.image.GetSpacing()
        return sx * sy * sz / 1000.0

    @cached_property
    def dvh(self):
        """DVHs of the manual structure set(s) in the course dose (None without both)."""
        from rtnode.dvh import compute_dvhs

        if not self.doses or not self.structure_sets.get("manual"):
            return None
        z = np.asarray([float(d.ImagePositionPatient[2]) for d in self.images])
        return [compute_dvhs(s, self.doses, self.plans or None, source="manual",
                             slice_positions=z) for s in self.structure_sets["manual"]]


def folder_course(folder: Path) -> QCCourse:
    """A folder of one course's files; an RTSTRUCT whose ROIs are all AUTOMATIC is 'auto'."""
    from rtnode.radiomics.images import IMAGE_MODALITIES

    files = find_course_files(Path(folder))
    modality = next((m for m in IMAGE_MODALITIES if files.get(m)), "")
    images = [pydicom.dcmread(p) for p in files.get(modality, [])] if modality else []
    if images:
        by_series: dict[str, list[Dataset]] = {}
        for d in images:
            by_series.setdefault(str(d.SeriesInstanceUID), []).append(d)
        images = max(by_series.values(), key=len)
    course = QCCourse(modality, images)
    for p in files.get("RTSTRUCT", []):
        ds = pydicom.dcmread(p)
        course.structure_sets.setdefault(structure_set_source(ds), []).append(ds)
    course.doses = [pydicom.dcmread(p) for p in files.get("RTDOSE", [])]
    course.plans = [pydicom.dcmread(p) for p in files.get("RTPLAN", [])]
    first = (images or course.doses or [None])[0]
    course.ids = {"patient_id": str(getattr(first, "PatientID", "") or "")}
    return course
