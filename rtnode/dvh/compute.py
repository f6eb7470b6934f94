"""Course-level DVH computation: the entry points the CLI and the ``dvh`` stage call.

``compute_dvhs`` takes pydicom datasets (one RTSTRUCT, its RTDOSE(s), optionally the RTPLAN);
``dvh_for_folder`` finds them in a course folder by modality. Both return ``DVHResults``:
per-ROI DVH curves, a flat metric record per ROI, and the TPS DVH check.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from rtnode.courses.doseplan import DosePlan
from rtnode.dvh.config import DVHConfig
from rtnode.dvh.dose import DoseVolume, load_dose, sum_doses
from rtnode.dvh.engine import RoiDVH, compute_roi_dvh
from rtnode.dvh.errors import DVHInputError
from rtnode.dvh.metrics import (course_prescription, plan_prescription, plan_targets,
                                 roi_metrics)
from rtnode.dvh.structures import StructureROI, assign_slabs, read_rois
from rtnode.dvh.tps import compare_with_tps



@dataclass
class DVHResults:
    """Everything computed for one course: curves, metric rows, TPS check, provenance."""

    engine: str
    rois: list[RoiDVH] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    tps_comparison: list[dict[str, Any]] = field(default_factory=list)
    prescription_gy: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    dose_plan: DosePlan | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The ``rtnode dvh --json`` document; NaN becomes null."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, (np.floating, np.integer, np.bool_)):
                return clean(v.item())
            return v
        return {
            "engine": self.engine,
            "prescription_gy": self.prescription_gy,
            "rois": [{k: clean(v) for k, v in row.items()} for row in self.metrics],
            "tps_comparison": [{k: clean(v) for k, v in row.items() if not k.startswith("_")}
                               for row in self.tps_comparison],
            "dose_plan": self.dose_plan.as_json() if self.dose_plan else None,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def check_frame_of_reference(rtstruct: Dataset, dose: DoseVolume) -> None:
    """RTSTRUCT and RTDOSE must share a FrameOfReferenceUID, or the DVH is meaningless."""
    rois_for = {str(getattr(r, "ReferencedFrameOfReferenceUID", "") or "")
                for r in getattr(rtstruct, "StructureSetROISequence", None) or []}
    struct_for = str(getattr(rtstruct, "FrameOfReferenceUID", "") or "")
    if not struct_for:
        refs = getattr(rtstruct, "ReferencedFrameOfReferenceSequence", None) or []
        struct_for = str(getattr(refs[0], "FrameOfReferenceUID", "")) if refs else ""
    struct_fors = ({struct_for} | rois_for) - {""}
    dose_for = dose.frame_of_reference_uid
    if dose_for and struct_fors and dose_for not in struct_fors:
        raise DVHInputError(
            f"RTSTRUCT {rtstruct.SOPInstanceUID} is on FrameOfReferenceUID "
            f"{', '.join(sorted(struct_fors))} but RTDOSE {', '.join(dose.sources)} is on "
            f"{dose_for}; they are not registered to each other")


def prescription_isodose_cc(rois: list[RoiDVH], dose: DoseVolume, rx_gy: float) -> float:
    """Volume (cc) receiving at least the prescription: inside the EXTERNAL ROI when the
    structure set has one, else the whole dose grid (PIV of the Paddick CI)."""
    for r in rois:
        if r.interpreted_type.upper() == "EXTERNAL" and r.covered_cc > 0:
            return r.dvh.volume_at(rx_gy)
    return float(np.count_nonzero(dose.values >= rx_gy)) * dose.voxel_volume_cc


def compute_dvhs(rtstruct: Dataset, rtdoses: Dataset | list[Dataset],
                 rtplan: Dataset | list[Dataset] | None = None,
                 config: DVHConfig | None = None,
                 source: str | None = None,
                 slice_positions: np.ndarray | None = None,
                 dose_plan: DosePlan | None = None) -> DVHResults:
    """DVHs and metrics of every ROI of ``rtstruct`` in every dose source of the course.

    rtdoses: one RTDOSE or several. Which dose is what — a plan's own dose, a replan that
    supersedes it, a boost, the TPS plan sum — is the dose plan's decision
    (``rtnode.courses.doseplan``: from RTPlanRelationship, DoseSummationType, the doses' plan
    references, approval, and the ``config.sum`` roles); every source gets its own rows, labelled
    in ``dose_source``, and ``course_dose`` marks the course dose's rows. rtplan: the RTPLAN(s),
    for the relationships and each source's prescription (``config.prescription_gy``
    overrides). source: "manual"/"auto" for every ROI, else taken from each ROI's
    ROIGenerationAlgorithm. slice_positions: CT slice z positions, when known, for the slab
    convention (else the contour planes of the structure set).
    """
    from rtnode.courses.doseplan import from_datasets

    config = config or DVHConfig()
    start = time.perf_counter()
    datasets = [rtdoses] if isinstance(rtdoses, Dataset) else list(rtdoses)
    plans = [] if rtplan is None else [rtplan] if isinstance(rtplan, Dataset) else list(rtplan)
    if not datasets:
        raise DVHInputError("no RTDOSE found")
    for ds in datasets:
        if getattr(ds, "Modality", "RTDOSE") != "RTDOSE":
            raise DVHInputError(f"expected an RTDOSE, got Modality {ds.Modality} "
                                f"({getattr(ds, 'SOPInstanceUID', '?')})")
    if dose_plan is None:
        dose_plan = from_datasets(plans, datasets, config.sum)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    sources = [s for s in dose_plan.sources if all(u in by_uid for u in s.rtdose)]
    if not sources:
        raise DVHInputError("none of the dose plan's RTDOSEs was given")
    for plan in plans:
        plan_for = str(getattr(plan, "FrameOfReferenceUID", "") or "")
        dose_fors = {str(getattr(d, "FrameOfReferenceUID", "") or "") for d in datasets} - {""}
        if plan_for and dose_fors and plan_for not in dose_fors:
            raise DVHInputError(f"RTPLAN {plan.SOPInstanceUID} is on FrameOfReferenceUID "
                                f"{plan_for} but RTDOSE is on {', '.join(sorted(dose_fors))}")
    rois = read_rois(rtstruct)
    assign_slabs(rois, frame_spacing(by_uid[sources[0].rtdose[0]]), slice_positions)
    referenced = plan_targets(plans, rtstruct)
    targets = {roi.number for roi in rois if is_target(roi, referenced)}
    loaded: dict[tuple[str, float | None], DoseVolume] = {}

    def dose_of(uid: str, rx: float | None) -> DoseVolume:
        key = (uid, rx if str(getattr(by_uid[uid], "DoseUnits", "GY")).upper() == "RELATIVE"
               else None)
        if key not in loaded:
            loaded[key] = load_dose(by_uid[uid], rx)
        return loaded[key]

    out = DVHResults(engine=config.engine, dose_plan=dose_plan)
    for src in sources:
        src_plans = [p for p in plans if str(p.SOPInstanceUID) in src.rtplan]
        rx = config.prescription_gy or course_prescription(
            src_plans, src.rtplan, summed=src.kind in ("sum", "tps_plan_sum"))
        dose = sum_doses([dose_of(u, rx) for u in src.rtdose])
        check_frame_of_reference(rtstruct, dose)
        part = _dvhs_in(rtstruct, rois, datasets, dose, config, rx, targets, source)
        for r in part.rois:
            r.dose_source = src.label
        for row in part.metrics:
            row["dose_source"] = src.label
            row["course_dose"] = src.course
        for row in part.tps_comparison:
            row["dose_source"] = src.label
        out.rois += part.rois
        out.metrics += part.metrics
        out.tps_comparison += part.tps_comparison
        out.notes += [f"{src.label}: {n}" if len(sources) > 1 else n for n in part.notes]
        if src.course or src is sources[0]:
            out.prescription_gy = rx
    out.notes = [dose_plan.describe()] * (len(dose_plan.sources) > 1) + out.notes
    out.seconds = time.perf_counter() - start
    return out


def frame_spacing(ds: Dataset) -> float:
    """Frame spacing (mm) of an RTDOSE from its header: the slab of a single-plane structure
    set."""
    offsets = [float(v) for v in getattr(ds, "GridFrameOffsetVector", None) or []]
    if len(offsets) > 1:
        return float(np.median(np.abs(np.diff(offsets)))) or 2.5
    return float(getattr(ds, "SliceThickness", 0) or 0) or 2.5


def _dvhs_in(rtstruct: Dataset, rois: list[StructureROI], datasets: list[Dataset],
             dose: DoseVolume, config: DVHConfig, rx: float | None, targets: set[int],
             source: str | None) -> DVHResults:
    """Every ROI's DVH and metrics in one dose."""
    if config.engine == "dicompyler":
        from rtnode.dvh.reference import reference_dose_dataset, reference_roi_dvh

        ref_dose = reference_dose_dataset([d for d in datasets if str(d.SOPInstanceUID)
                                           in dose.sources], dose)
        results = [reference_roi_dvh(rtstruct, ref_dose, roi) for roi in rois]
    else:
        results = [compute_roi_dvh(roi, dose, config) for roi in rois]
    if source:
        for r in results:
            r.source = source
    piv = prescription_isodose_cc(results, dose, rx) if rx else None
    metrics = [roi_metrics(r, config, rx if r.roi_number in targets else None, piv)
               for r in results]
    notes = list(dose.notes)
    tps = compare_with_tps(dose.dvh_sequence, results, rx)
    odd = sorted({row["tps_header_check"] for row in tps} - {"agrees", "absent"})
    for check in odd:
        names = [row["roi_name"] for row in tps if row["tps_header_check"] == check]
        what = ("is in % of the prescription, not Gy" if check.startswith("%")
                else "disagrees with its own DVH curve")
        notes.append(f"TPS DVHMeanDose {what} for {', '.join(names)}: TPS mean doses are "
                     "taken from the DVH curves")
    for r in results:
        if r.is_empty:
            notes.append(f"ROI {r.roi_name!r} is empty")
        elif r.coverage < 0.999:
            notes.append(f"ROI {r.roi_name!r}: {100 * r.coverage:.1f} % inside the dose grid")
        notes.extend(r.warnings)
    return DVHResults(engine=config.engine, rois=results, metrics=metrics,
                      tps_comparison=tps,
                      prescription_gy=rx, notes=notes)


def is_target(roi: StructureROI, referenced: set[int]) -> bool:
    """A target gets prescription metrics: its RT ROI Interpreted Type says so, or an RTPLAN's
    dose reference points at it."""
    return roi.is_target or roi.number in referenced


def find_course_files(folder: Path) -> dict[str, list[Path]]:
    """DICOM files under folder grouped by Modality (headers only are read)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["Modality", "SOPInstanceUID"])
        except Exception:
            continue
        modality = str(getattr(ds, "Modality", "") or "")
        if modality:
            found.setdefault(modality, []).append(path)
    return found


def merge_results(parts: list[DVHResults]) -> DVHResults:
    """One result for a course with several structure sets (e.g. manual and auto)."""
    if len(parts) == 1:
        return parts[0]
    merged = DVHResults(engine=parts[0].engine, prescription_gy=parts[0].prescription_gy,
                        dose_plan=parts[0].dose_plan)
    for p in parts:
        merged.rois += p.rois
        merged.metrics += p.metrics
        merged.tps_comparison += p.tps_comparison
        merged.notes += p.notes
        merged.seconds += p.seconds
    return merged


def _read(path: Path | str, modality: str, option: str) -> Dataset:
    """One DICOM file of the expected modality, or a DVHInputError naming file and problem."""
    path = Path(path)
    if not path.is_file():
        raise DVHInputError(f"{option} {path}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DVHInputError(f"{option} {path}: not a DICOM file ({exc})") from None
    found = str(getattr(ds, "Modality", "") or "")
    if found != modality:
        raise DVHInputError(f"{option} {path}: a {found or 'file without Modality'}, "
                            f"not an {modality}")
    return ds


def dvh_for_folder(path: Path | str | None = None, rtstruct: Path | None = None,
                   rtdose: list[Path] | Path | None = None,
                   rtplan: list[Path] | Path | None = None,
                   config: DVHConfig | None = None) -> DVHResults:
    """DVHs for a course folder: RTSTRUCT(s), RTDOSE(s) and RTPLAN(s) found by modality unless
    given. Several RTSTRUCTs (manual and auto) are each computed in every dose source."""
    if path is not None and not Path(path).exists():
        raise DVHInputError(f"{path}: no such file or folder")
    files = find_course_files(Path(path)) if path is not None else {}
    structs = [rtstruct] if rtstruct else files.get("RTSTRUCT", [])
    doses = ([rtdose] if isinstance(rtdose, (str, Path)) else list(rtdose)) if rtdose \
        else files.get("RTDOSE", [])
    plans = ([rtplan] if isinstance(rtplan, (str, Path)) else list(rtplan)) if rtplan \
        else files.get("RTPLAN", [])
    if not structs:
        raise DVHInputError(f"no RTSTRUCT found in {path}")
    if not doses:
        raise DVHInputError(f"no RTDOSE found in {path}")
    dose_ds = [_read(p, "RTDOSE", "--rtdose") for p in doses]
    plan_ds = [_read(p, "RTPLAN", "--rtplan") for p in plans]
    parts = [compute_dvhs(_read(s, "RTSTRUCT", "--rtstruct"), dose_ds, plan_ds, config)
             for s in structs]
    return merge_results(parts)
