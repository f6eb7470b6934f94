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

from rtnode.colours import display_colour
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
    #: the dvh stage's output folder of this revision; its tables are reused when present
    dvh_dir: Path | None = None
    #: the radiomics stage's output folder, summarised on the report when present
    radiomics_dir: Path | None = None
    #: modalities the course's rule needs (e.g. RTSTRUCT and RTDOSE for a dvh stage): their
    #: checks must run for the course to be fit even when the objects are absent
    expected: set[str] = field(default_factory=set)

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
    def stage_dvh(self):
        """The dvh stage's tables (None when it did not write them)."""
        from rtnode.qc.dvh_source import read_stage_outputs

        return read_stage_outputs(self.dvh_dir)

    @cached_property
    def _computed_dvh(self) -> list:
        """DVHResults per structure set (manual first), computed here only when the dvh stage's
        outputs are absent. An auto set that cannot be computed is left out (the report says
        so through the missing curves), a manual one raises for the dose checks to report."""
        from rtnode.dvh import compute_dvhs

        if not self.doses or not self.structure_sets:
            return []
        z = np.asarray([float(d.ImagePositionPatient[2]) for d in self.images]) \
            if self.images else None
        out = [compute_dvhs(s, self.doses, self.plans or None, source="manual",
                            slice_positions=z) for s in self.structure_sets.get("manual", [])]
        for s in self.structure_sets.get("auto", []):
            try:
                out.append(compute_dvhs(s, self.doses, self.plans or None, source="auto",
                                        slice_positions=z))
            except ValueError:
                continue
        return out

    @cached_property
    def dvh(self):
        """DVHs of the manual structure set(s) in the course dose (None without both): the dvh
        stage's outputs when present, else computed."""
        if not self.doses or not self.structure_sets.get("manual"):
            return None
        if self.stage_dvh is not None:
            from rtnode.qc.dvh_source import stored_results

            return stored_results(self.stage_dvh, self.doses)
        return self._computed_dvh[:len(self.structure_sets["manual"])]

    @cached_property
    def dvh_tables(self):
        """Metrics and curves of every ROI and source for the report (None without dose or
        structures)."""
        if self.stage_dvh is not None:
            return self.stage_dvh
        if not self.doses or not self.structure_sets:
            return None
        from rtnode.qc.dvh_source import computed_tables

        results = self._computed_dvh
        return computed_tables(results) if results else None

    def roi_colours(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(source, ROI name) -> the RTSTRUCT's ROIDisplayColor, where it has one."""
        out: dict[tuple[str, str], tuple[int, int, int]] = {}
        for source, sets in self.structure_sets.items():
            for ds in sets:
                names = {int(i.ROINumber): str(getattr(i, "ROIName", "") or "")
                         for i in getattr(ds, "StructureSetROISequence", None) or []}
                for roi in getattr(ds, "ROIContourSequence", None) or []:
                    rgb = display_colour(getattr(roi, "ROIDisplayColor", None))
                    name = names.get(int(getattr(roi, "ReferencedROINumber", -1)))
                    if name and rgb is not None:
                        out.setdefault((source, name), rgb)
        return out


class MultiplePatientsError(ValueError):
    """A folder given as one course holds several patients' files."""


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
    _one_patient(folder, files)
    course = QCCourse(modality, images)
    for p in files.get("RTSTRUCT", []):
        ds = pydicom.dcmread(p)
        course.structure_sets.setdefault(structure_set_source(ds), []).append(ds)
    course.doses = [pydicom.dcmread(p) for p in files.get("RTDOSE", [])]
    course.plans = [pydicom.dcmread(p) for p in files.get("RTPLAN", [])]
    first = (images or course.doses or [None])[0]
    course.ids = {"patient_id": str(getattr(first, "PatientID", "") or "")}
    return course


def _one_patient(folder: Path, files: dict[str, list[Path]]) -> None:
    """QC judges one course: a folder with several PatientIDs is refused with their names
    (mixing them would compare one patient's contours with another's CT)."""
    ids: dict[str, int] = {}
    for paths in files.values():
        for p in paths:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["PatientID"])
            pid = str(getattr(ds, "PatientID", "") or "")
            ids[pid] = ids.get(pid, 0) + 1
    if len(ids) > 1:
        listed = ", ".join(f"{k or '(empty)'} ({n} files)" for k, n in sorted(ids.items()))
        raise MultiplePatientsError(
            f"{folder} holds files of {len(ids)} patients ({listed}); QC checks one course: "
            "give one patient's folder")
