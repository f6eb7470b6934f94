"""QC pictures put every contour on its own anatomy (asymmetric phantom, HFS/FFS/HFP), draw each
ROI in its ROIDisplayColor in both figures, keep every ROI in the legends; verdicts skip when
there is nothing to judge and are not 'fit' when the checks that matter did not run;
completeness says 'possibly incomplete' and names a FrameOfReferenceUID mismatch; QC reuses the
dvh stage's tables (old and new column names)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from pydicom.uid import generate_uid

from rtnode.courses.completeness import judge
from rtnode.courses.grouping import Member, group_courses
from rtnode.phantom.asymmetric import ANTERIOR_LEFT, INSERT_HU, POSTERIOR, asymmetric_course
from rtnode.qc.course import QCCourse, folder_course
from rtnode.qc.render import dvh_figure, overlays_figure
from rtnode.qc.run import run_checks, write_qc

WINDOW = (-400.0, 1000.0)


def qc_of(c, **kw) -> QCCourse:
    return QCCourse("CT", list(c.ct), {"manual": [c.rtstruct]}, [c.rtdose], [c.rtplan], **kw)


def contour_centroid(ax, label: str) -> tuple[float, float]:
    """Mean vertex (x = displayed column, y = displayed row) of the ROI's contour set."""
    sets = [c for c in ax.collections if c.get_gid() == label]
    assert sets, f"no contour of {label} in {ax.get_title()}"
    v = np.concatenate([p.vertices for c in sets for p in c.get_paths()])
    return float(v[:, 0].mean()), float(v[:, 1].mean())


def shown_at(ax, x: float, y: float, layer: int = 0) -> float:
    """The value the panel shows at data point (x, y) of its image layer (0: CT, 1: dose)."""
    arr = np.ma.getdata(ax.images[layer].get_array())
    return float(arr[int(round(y)), int(round(x))])


def screen_position(ax, x: float, y: float) -> tuple[float, float]:
    """(horizontal, vertical) of a data point in the panel, 0..1 from left and from TOP, as the
    viewer sees it (whatever the imshow origin)."""
    fx, fy = ax.transAxes.inverted().transform(ax.transData.transform((x, y)))
    return float(fx), float(1.0 - fy)


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP"])
def test_each_contour_lies_over_its_structure_in_all_three_views(position):
    import matplotlib.pyplot as plt

    c = asymmetric_course(position)
    course = qc_of(c)
    for roi in (ANTERIOR_LEFT, POSTERIOR):
        fig = overlays_figure(course, WINDOW, focus=("manual", roi.name))
        axial, coronal, sagittal = fig.axes[:3]
        positions = {}
        for ax in (axial, coronal, sagittal):
            x, y = contour_centroid(ax, roi.name)
            # the contour encloses exactly the insert the CT shows there
            assert shown_at(ax, x, y) == pytest.approx(INSERT_HU[roi.name], abs=1), \
                (position, roi.name, ax.get_title())
            positions[ax.get_title().split()[0]] = screen_position(ax, x, y)
        h, v = positions["Axial"]
        if roi is ANTERIOR_LEFT:
            # axial: anterior up, the patient's left on the viewer's right
            assert v < 0.45 and h > 0.55, (position, positions)
            assert positions["Coronal"][0] > 0.55 and positions["Coronal"][1] < 0.5  # left, sup
            assert positions["Sagittal"][0] < 0.45 and positions["Sagittal"][1] < 0.5  # ant, sup
            # the dose hot spot sits on the anterior-left insert
            x, y = contour_centroid(axial, roi.name)
            dose = np.ma.getdata(axial.images[1].get_array())
            assert shown_at(axial, x, y, 1) > 0.9 * float(dose.max())
        else:
            assert v > 0.55 and 0.4 < h < 0.6, (position, positions)
            assert positions["Coronal"][1] > 0.5  # inferior
            assert positions["Sagittal"][0] > 0.55 and positions["Sagittal"][1] > 0.5
        plt.close(fig)


def test_colours_come_from_roidisplaycolor_in_both_figures():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    c = asymmetric_course("HFS")
    course = qc_of(c)
    fig = overlays_figure(course, WINDOW, focus=("manual", "AntLeft"))
    cs = next(x for x in fig.axes[0].collections if x.get_gid() == "AntLeft")
    want = tuple(v / 255 for v in ANTERIOR_LEFT.color)
    assert to_rgb(cs.get_edgecolor()[0]) == pytest.approx(want, abs=1e-3)
    plt.close(fig)
    dvh = dvh_figure(course)
    line = next(ln for ln in dvh.axes[0].lines if ln.get_gid() == "AntLeft")
    assert to_rgb(line.get_color()) == pytest.approx(want, abs=1e-3)
    rx = [ln for ln in dvh.axes[0].lines if ln.get_label().startswith("Prescription")]
    assert rx and "60 Gy" in rx[0].get_label()
    plt.close(dvh)


def test_the_dvh_stage_figure_uses_the_same_colours_as_the_report():
    """dvh.png (the dvh stage's own figure) draws each ROI in its ROIDisplayColor, as the QC
    report does; an ROI without one gets a palette colour no other line has."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    from rtnode.dvh import compute_dvhs
    from rtnode.dvh.outputs import dvh_figure as stage_dvh_figure
    from rtnode.qc.render import roi_styles

    c = asymmetric_course("HFS")
    rtstruct = copy.deepcopy(c.rtstruct)
    numbers = {int(i.ROINumber): str(i.ROIName) for i in rtstruct.StructureSetROISequence}
    for item in rtstruct.ROIContourSequence:
        if numbers[int(item.ReferencedROINumber)] == "BODY":
            del item.ROIDisplayColor
    fig = stage_dvh_figure(compute_dvhs(rtstruct, [c.rtdose], [c.rtplan], source="manual"))
    lines = {ln.get_label().split(" (")[0]: to_rgb(ln.get_color())
             for ln in fig.axes[0].lines if not ln.get_label().startswith("_")}
    plt.close(fig)
    for shape in (ANTERIOR_LEFT, POSTERIOR):
        want = tuple(v / 255 for v in shape.color)
        assert lines[shape.name] == pytest.approx(want, abs=1e-3)
        assert roi_styles(qc_of(c))[("manual", shape.name)].rgb == pytest.approx(want, abs=1e-3)
    assert "BODY" in lines
    others = [rgb for name, rgb in lines.items() if name != "BODY"]
    assert all(np.abs(np.subtract(lines["BODY"], rgb)).max() > 0.05 for rgb in others)


def test_thirty_rois_every_one_in_both_legends_no_colour_repeated():
    import matplotlib.pyplot as plt

    from rtnode.phantom.autoseg import many_shapes
    from rtnode.phantom.course import PhantomCourse
    from rtnode.phantom.rt import make_rtstruct

    shapes = many_shapes(30, seed=3)
    pc = PhantomCourse(shapes=shapes).build()
    for ds in [pc.rtstruct]:  # no ROIDisplayColor: the palette must still tell 31 ROIs apart
        for item in ds.ROIContourSequence:
            del item.ROIDisplayColor
    course = QCCourse("CT", list(pc.ct), {"manual": [pc.rtstruct]}, [pc.rtdose], [pc.rtplan])
    course.structure_sets["auto"] = [make_rtstruct(pc.patient, pc.ct, shapes[:3],
                                                   label="AUTO", algorithm="AUTOMATIC")]
    fig = overlays_figure(course, (-400, 400))
    legend = [t.get_text() for ax in fig.axes for lg in [ax.get_legend()] if lg
              for t in lg.get_texts()]
    drawn = {(s, n) for s in ("manual", "auto") for n, m in course.masks(s).items() if m.any()}
    assert len(legend) == len(drawn) >= 31
    plt.close(fig)
    dvh = dvh_figure(course)
    labels = [t.get_text() for t in dvh.axes[0].get_legend().get_texts()]
    names = {s.name for s in shapes}
    assert names <= set(labels)  # every manual ROI, none dropped
    assert {f"{s.name} (auto)" for s in shapes[:3]} <= set(labels)  # and the auto ones
    colours = [ln.get_color() for ln in dvh.axes[0].lines if ln.get_gid()]
    manual = [c for ln, c in zip([ln for ln in dvh.axes[0].lines if ln.get_gid()], colours)
              if not ln.get_gid().endswith("(auto)")]
    assert len({tuple(np.round(c, 3)) for c in manual}) == len(manual)
    plt.close(dvh)


# -- verdicts ------------------------------------------------------------------------------

def by_id(checks):
    return {c.id: c for c in checks}


def test_empty_folder_is_not_fit(tmp_path):
    doc = write_qc(folder_course(tmp_path), tmp_path / "out")
    assert doc["status"] == "fail"
    required = next(c for c in doc["checks"] if c["id"] == "required_checks")
    assert required["status"] == "fail" and "ct_orientation" in required["reason"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "NOT fit for analysis" in html and ">Fit for analysis" not in html


def test_course_without_rtstruct_skips_the_reference_check():
    c = asymmetric_course("HFS")
    checks = by_id(run_checks(QCCourse("CT", list(c.ct))))
    assert checks["rtstruct_references"].status == "skip"
    assert checks["roi_contours"].status == "skip"
    assert checks["required_checks"].status == "pass"  # a CT-only course needs its CT checks
    # with an auto-segmentation only, the references prove nothing about what was sent
    auto = copy.deepcopy(c.rtstruct)
    checks = by_id(run_checks(QCCourse("CT", list(c.ct), {"auto": [auto]})))
    assert checks["rtstruct_references"].status == "skip"
    assert "no received RTSTRUCT" in checks["rtstruct_references"].reason


def test_rule_expecting_dose_is_not_fit_without_it():
    c = asymmetric_course("HFS")
    course = QCCourse("CT", list(c.ct), {"manual": [c.rtstruct]}, expected={"RTDOSE"})
    checks = by_id(run_checks(course))
    assert checks["required_checks"].status == "fail"
    assert "dose_units (no RTDOSE)" in checks["required_checks"].reason


def test_autoseg_with_nothing_to_judge_is_skip():
    c = asymmetric_course("HFS")  # AntLeft / Posterior / BODY: no known organ, no L/R marker
    auto = copy.deepcopy(c.rtstruct)
    checks = by_id(run_checks(QCCourse("CT", list(c.ct), {"auto": [auto]})))
    assert checks["autoseg_volumes"].status == "skip"
    assert checks["autoseg_laterality"].status == "skip"
    assert "left/right marker" in checks["autoseg_laterality"].reason


def test_three_slices_of_an_announced_64_are_possibly_incomplete():
    c = asymmetric_course("HFS")
    ct = [copy.deepcopy(d) for d in c.ct[12:15]]
    for d in ct:
        d.ImagesInAcquisition = 64
    check = by_id(run_checks(QCCourse("CT", ct)))["course_completeness"]
    assert check.status == "warn"
    assert "possibly incomplete: the CT series has 3 slice(s), its ImagesInAcquisition " \
           "says 64" in check.reason
    # the structures reach far beyond these 3 slices: said as well
    check = by_id(run_checks(QCCourse("CT", ct, {"manual": [c.rtstruct]})))["course_completeness"]
    assert "structures span z" in check.reason
    # the course detector says it too, from the index's attributes
    members = [Member(d.SOPInstanceUID, d.SOPClassUID, "CT", d.SeriesInstanceUID,
                      d.StudyInstanceUID, d.FrameOfReferenceUID, "x", "t",
                      attrs={"ImagePositionPatient": list(d.ImagePositionPatient),
                             "ImageOrientationPatient": list(d.ImageOrientationPatient),
                             "ImagesInAcquisition": 64}) for d in ct]
    verdict = judge(group_courses("P", members)[0])
    assert verdict.complete and verdict.possibly_incomplete
    assert verdict.as_json()["possibly_incomplete"][0].startswith("possibly incomplete")


def test_dose_on_another_frame_of_reference_is_named_by_completeness():
    c = asymmetric_course("HFS")
    dose = copy.deepcopy(c.rtdose)
    dose.FrameOfReferenceUID = generate_uid()
    course = QCCourse("CT", list(c.ct), {"manual": [c.rtstruct]}, [dose], [c.rtplan])
    check = by_id(run_checks(course))["course_completeness"]
    assert check.status == "fail"
    assert f"RTDOSE {dose.SOPInstanceUID} is on FrameOfReferenceUID " \
           f"{dose.FrameOfReferenceUID}" in check.reason
    # and the detector's verdict is not complete for it
    from test_grouping import members_of

    drafts = group_courses(c.patient.patient_id, members_of(*c.ct, c.rtstruct, c.rtplan, dose))
    verdicts = [judge(d) for d in drafts if d.of("RTDOSE")]
    assert verdicts and not verdicts[0].complete
    assert any("FrameOfReferenceUID" in m for m in verdicts[0].missing)


# -- reuse of the dvh stage's outputs --------------------------------------------------------

def test_qc_reuses_the_dvh_stage_tables_old_and_new_column_names(tmp_path):
    from rtnode.dvh import compute_dvhs, write_course_outputs

    c = asymmetric_course("HFS")
    stage_dir = tmp_path / "dvh"
    write_course_outputs([compute_dvhs(c.rtstruct, [c.rtdose], [c.rtplan], source="manual")],
                         stage_dir)
    metrics = pd.read_csv(stage_dir / "dvh_metrics.csv")
    assert "d_0.03cc" in metrics.columns or "d_0.03cc_gy" in metrics.columns
    # the renamed columns (every dose column ends in _gy) and a dose_source column
    metrics = metrics.rename(columns={"d_0.03cc": "d_0.03cc_gy", "d_1cc": "d_1cc_gy"})
    metrics.loc[metrics.roi_name == "AntLeft", "dmean_gy"] = 12.3456  # marks the stage's value
    metrics["dose_source"] = "RTDOSE PLAN (TPS)"
    metrics.to_csv(stage_dir / "dvh_metrics.csv", index=False)
    course = qc_of(c, dvh_dir=stage_dir)
    assert course.dvh_tables.origin == "dvh stage"
    checks = by_id(run_checks(course))
    assert checks["dose_coverage"].status == "pass"
    assert "_computed_dvh" not in course.__dict__  # nothing recomputed
    write_qc(course, tmp_path / "qc")
    html = (tmp_path / "qc" / "report.html").read_text()
    assert ">12.35<" in html and "RTDOSE PLAN (TPS)" in html and "dvh stage" in html
    # without the stage's files QC computes them itself
    alone = qc_of(c)
    assert alone.dvh_tables.origin == "computed by QC"
    assert float(alone.dvh_tables.metrics.set_index("roi_name").loc["AntLeft", "dmean_gy"]) \
        != pytest.approx(12.3456, abs=0.01)


def test_report_shows_radiomics_summary_and_local_time(tmp_path, monkeypatch):
    import time

    c = asymmetric_course("HFS")
    rad = tmp_path / "radiomics"
    rad.mkdir()
    pd.DataFrame([{"roi_name": "AntLeft", "source": "manual", "state": "done", "reason": "",
                   "voxels": 300, "seconds": 0.2},
                  {"roi_name": "BODY", "source": "manual", "state": "skipped",
                   "reason": "skip_rois", "voxels": 0, "seconds": 0.0}]
                 ).to_csv(rad / "radiomics_status.csv", index=False)
    pd.DataFrame([{"roi_name": "AntLeft", "source": "manual", "voxels": 300,
                   "original_firstorder_Mean": 400.0, "original_shape_MeshVolume": 7.2}]
                 ).to_csv(rad / "radiomics.csv", index=False)
    monkeypatch.setenv("TZ", "Europe/Zurich")
    time.tzset()
    try:
        write_qc(qc_of(c, radiomics_dir=rad), tmp_path / "qc")
    finally:
        monkeypatch.undo()
        time.tzset()
    html = (tmp_path / "qc" / "report.html").read_text()
    assert "2 features per ROI; 1 done, 1 skipped" in html and "skip_rois" in html
    assert "(UTC+0100)" in html or "(UTC+0200)" in html  # Zurich local time, not UTC
    assert "PLAN1: prescription 60 Gy, 30 fraction(s), 2.00 Gy per fraction" in html


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP"])
def test_axial_scans_in_any_patient_position_pass_the_orientation_check(position):
    c = asymmetric_course(position)
    check = by_id(run_checks(QCCourse("CT", list(c.ct))))["ct_orientation"]
    assert check.status == "pass" and position in check.reason
