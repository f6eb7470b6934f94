"""report.html of a 30-ROI course (manual + auto), opened in headless Debian Chromium through
selenium and chromium-driver: the layout is asserted from the live page (every ROI in the
colour-keyed table with its ROIDisplayColor, DVH metrics present, pictures loaded and inside
the page width, verdict shown) and a screenshot is taken — no golden image."""

from __future__ import annotations


import pytest

from rtnode.phantom.autoseg import many_shapes
from rtnode.phantom.course import PhantomCourse, linear_dose
from rtnode.phantom.rt import make_rtstruct
from rtnode.qc.course import folder_course
from rtnode.qc.run import write_qc


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("qc30")
    shapes = many_shapes(30, seed=7)
    course = PhantomCourse(shapes=shapes, dose=linear_dose(60.0, (0.15, -0.1, 0.12))).build()
    course.write(root / "course")
    auto = make_rtstruct(course.patient, course.ct, shapes[:4], label="AUTOSEG",
                         series_number=9, algorithm="AUTOMATIC")
    auto.save_as(root / "course" / "RTSTRUCT_auto.dcm", enforce_file_format=True)
    doc = write_qc(folder_course(root / "course"), root / "qc")
    return root / "qc" / "report.html", shapes, doc


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from peers import headless_chromium

    driver = headless_chromium(tmp_path_factory.mktemp("profile"))
    yield driver
    driver.quit()


def test_thirty_roi_report_layout_in_chromium(report, browser, tmp_path):
    from selenium.webdriver.common.by import By

    path, shapes, doc = report
    browser.get(path.as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#roi-table tr.roi")
    shown = {(r.get_attribute("data-source"), r.get_attribute("data-roi")): r for r in rows}
    # every ROI is in the colour-keyed table (the legend of both pictures): none dropped
    for s in shapes:
        assert ("manual", s.name) in shown, s.name
    for s in shapes[:4]:
        assert ("auto", s.name) in shown, s.name
    assert len(rows) == len(shapes) + 4
    # keyed by the RTSTRUCT's ROIDisplayColor
    for s in shapes:
        swatch = shown[("manual", s.name)].find_element(By.CSS_SELECTOR, ".swatch")
        rgb = swatch.value_of_css_property("background-color")
        assert rgb.replace("rgba", "rgb").startswith(f"rgb({s.color[0]}, {s.color[1]}, "
                                                     f"{s.color[2]}"), (s.name, rgb)
    # DVH metrics present for ROIs of both sources, with numbers
    head = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#roi-table th")]
    for col in ("Volume (cc)", "Dmean", "D98%", "D95%", "D50%", "D2%", "Dmax"):
        assert col in head, head
    dmean = head.index("Dmean")
    for key in (("manual", shapes[0].name), ("auto", shapes[0].name)):
        cells = shown[key].find_elements(By.TAG_NAME, "td")
        assert float(cells[dmean].text) > 0, key
    # the pictures loaded and fit the page width; nothing forces horizontal scrolling
    for cls in ("overlays", "dvh"):
        img = browser.find_element(By.CSS_SELECTOR, f"img.{cls}")
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 0, cls
        assert img.size["width"] <= browser.execute_script(
            "return document.documentElement.clientWidth"), cls
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # who, what and the verdict are on the page
    facts = browser.find_element(By.CSS_SELECTOR, "table.facts").text
    assert "PHANTOM001" in facts and "2026-01-01" in facts and "fraction" in facts
    verdict = browser.find_element(By.ID, "verdict").text
    assert verdict.startswith({"pass": "Fit", "warn": "Usable", "fail": "NOT"}[doc["status"]])
    assert browser.find_element(By.ID, "agreement").text.count("\n") >= 4  # 4 pairs + header
    shot = tmp_path / "report.png"
    browser.set_window_size(1400, max(1000, browser.execute_script(
        "return document.body.scrollHeight")))
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 50_000
