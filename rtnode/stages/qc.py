"""``qc``: the course's QC checks (pass/warn/fail with a reason each) in qc.json and a
self-contained report.html (checks table, contour/dose overlays, DVH plot).

Runs after dvh and rtstruct (it reads the auto-segmentation's RTSTRUCT when there is one) and
takes the course detector's verdict, so what was missing when the course ran is on the report.
The DVHs it shows and judges are the dvh stage's own dvh_metrics.csv / dvh_curves.parquet when
that stage wrote them; QC computes DVHs only when they are absent.
"""

from __future__ import annotations

from rtnode.stages.base import Stage, StageContext, register
from rtnode.stages.rtstruct import RTSTRUCT_AUTO



def qc_config(ctx: StageContext):
    from rtnode.qc.config import QCConfig

    return ctx.config.qc if ctx.config is not None else QCConfig()


def course_for_qc(ctx: StageContext):
    import pydicom

    from rtnode.qc.course import QCCourse
    from rtnode.radiomics.images import IMAGE_MODALITIES

    modality, images = "", []
    for m in IMAGE_MODALITIES:
        members = ctx.of(m)
        if members:
            by_series: dict[str, list] = {}
            for member in members:
                by_series.setdefault(member.series_uid, []).append(member)
            modality = m
            images = [pydicom.dcmread(ctx.path(x)) for x in max(by_series.values(), key=len)]
            break
    course = QCCourse(modality, images, verdict=dict(ctx.verdict or {}),
                      ids={"course_id": ctx.course_id, "patient_id": ctx.patient_id,
                           "revision": ctx.revision},
                      dvh_dir=ctx.upstream.get("dvh"), radiomics_dir=ctx.upstream.get("radiomics"),
                      expected=expected_modalities(ctx.rule))
    wanted = set(ctx.rule.get("dose", {}).get("rtdose") or [])
    course.doses = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTDOSE")
                    if not wanted or m.sop_instance_uid in wanted]
    course.plans = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTPLAN")]
    manual = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTSTRUCT")]
    if manual:
        course.structure_sets["manual"] = manual
    auto = ctx.upstream.get("rtstruct")
    if auto is not None and (auto / RTSTRUCT_AUTO).exists():
        course.structure_sets["auto"] = [pydicom.dcmread(auto / RTSTRUCT_AUTO)]
    return course


def expected_modalities(rule: dict) -> set[str]:
    """What the course's rule requires it to hold (match.modalities, match.has_rtdose): the
    checks of those objects must run for the course to be fit for analysis."""
    match = rule.get("match") or {}
    out = {str(m).upper() for m in match.get("modalities") or []}
    if match.get("has_rtdose") is True:
        out.add("RTDOSE")
    return out


def run_qc(ctx: StageContext) -> None:
    from rtnode.qc.run import write_qc

    write_qc(course_for_qc(ctx), ctx.out_dir, qc_config(ctx))


STAGE = register(Stage(
    name="qc", queue="cpu", run=run_qc, uses=("rtstruct", "dvh", "radiomics"),
    writes=("qc.json", "report.html"), timeout=900,
    description="QC checks (CT geometry, references, contours, dose, auto-segmentation, DVH vs "
                "TPS, completeness): qc.json and report.html"))
