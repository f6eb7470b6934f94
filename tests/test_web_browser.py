"""The dashboard in a real browser: Debian's chromium driven by chromium-driver through
selenium, against a running ``rtnode serve`` that received a phantom course. A screenshot of
every page visited is left in the test's tmp folder."""

from __future__ import annotations


import pytest

from peers import store_responses, storescu
from test_courses import write_course
from rtnode.phantom import Patient

pytestmark = pytest.mark.network

TOKEN = "browser-test-token"


@pytest.fixture
def browser(tmp_path):
    from peers import headless_chromium

    driver = headless_chromium(tmp_path / "chromium-profile", window="1400,2200")
    yield driver
    driver.quit()


def test_dashboard_course_page_and_requeue_in_chromium(node_factory, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    node = node_factory(http={"token": TOKEN})
    files = write_course(tmp_path / "course", Patient(patient_id="BROWSER1"))
    r = storescu(node.port, [f for group in files.values() for f in group])
    assert set(store_responses(r.stdout)) == {"Success"}
    node.wait_courses(lambda cs: len(cs) == 1 and cs[0]["state"] == "done", timeout=300,
                      what="the phantom course to finish")
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        path = shots / f"{name}.png"
        browser.save_screenshot(str(path))
        assert path.stat().st_size > 10_000, f"{name}: empty screenshot"

    # static/live.js replaces the stage table in place: an element found a moment ago may be
    # gone when it is read, and is looked up again at the next poll
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    # patient data needs the login: the dashboard sends us to it first
    browser.get(node.http_url + "/")
    wait.until(lambda d: "/login" in d.current_url)
    shot("login")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login-button").click()
    wait.until(lambda d: d.find_elements(By.ID, "node-card"))
    assert "up" in browser.find_element(By.ID, "node-card").text
    assert browser.find_element(By.CSS_SELECTOR, "tr[data-queue=cpu]").get_attribute(
        "data-paused") == "false"
    shot("dashboard")

    browser.find_element(By.ID, "courses-link").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#courses-table a.course-link"))
    assert "BROWSER1" in browser.find_element(By.ID, "courses-table").text
    shot("courses")
    browser.find_element(By.CSS_SELECTOR, "#courses-table a.course-link").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.stage-row"))
    rows = {r.get_attribute("data-stage"): r for r in
            browser.find_elements(By.CSS_SELECTOR, "tr.stage-row")}
    states = {name: row.get_attribute("data-state") for name, row in rows.items()}
    for stage in ("manifest", "segment", "rtstruct", "dvh", "radiomics", "qc"):
        assert states[stage] == "done", states
    assert states["send"] == "skipped"  # no destination configured: said, not hidden
    assert "Complete" in browser.find_element(By.ID, "verdict").text
    # the DVH plot loaded and the metrics table has the course's ROIs
    assert browser.execute_script(
        "return document.getElementById('dvh-plot').naturalWidth") > 0
    assert "PTV" in browser.find_element(By.ID, "dvh-table").text
    links = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")}
    assert {"dvh_metrics.csv", "radiomics.csv", "rtstruct_auto.dcm"} <= links
    # the QC report is embedded
    frame = browser.find_element(By.ID, "qc-report")
    browser.execute_script("arguments[0].scrollIntoView()", frame)
    browser.switch_to.frame(frame)
    wait.until(lambda d: "QC" in d.title or d.find_elements(By.CSS_SELECTOR, ".verdict"))
    assert browser.find_elements(By.CSS_SELECTOR, ".verdict")
    browser.switch_to.default_content()
    browser.execute_script("window.scrollTo(0, 0)")
    shot("course")
    course_url = browser.current_url
    before = rows["dvh"].get_attribute("data-started")
    assert before

    # requeue the dvh stage: confirmation page, then the course page follows it live
    rows["dvh"].find_element(By.CSS_SELECTOR, "a.requeue").click()
    wait.until(lambda d: d.find_elements(By.ID, "confirm"))
    assert "dvh" in browser.find_element(By.ID, "confirm-text").text
    shot("confirm")
    browser.find_element(By.ID, "confirm").click()
    wait.until(lambda d: d.current_url.startswith(course_url))
    assert "1 stage run(s) of course 1 back to pending" in browser.find_element(
        By.ID, "flash").text

    def dvh_ran_again(d) -> str | None:
        row = d.find_elements(By.CSS_SELECTOR, "tr.stage-row[data-stage=dvh]")
        if not row:
            return None
        started = row[0].get_attribute("data-started")
        if row[0].get_attribute("data-state") == "done" and started and started > before:
            return started
        return None
    # no reload: static/live.js refreshes the stage table in place
    started = WebDriverWait(browser, 240, poll_frequency=0.5,
                            ignored_exceptions=(StaleElementReferenceException,)
                            ).until(dvh_ran_again)
    wait.until(lambda d: d.find_element(By.ID, "course-badge").text == "done")
    shot("course-after-requeue")
    dvh = next(s for s in node.cli_json("course", "show", "1")["stages"] if s["stage"] == "dvh")
    assert dvh["state"] == "done" and dvh["started_at"] == started > before

    for page, marker in (("/retrievals", "Retrievals"), ("/rules", "default"),
                         ("/config", "storage"), ("/api/v1/docs", "/api/v1/courses")):
        browser.get(node.http_url + page)
        wait.until(lambda d: marker in d.find_element(By.TAG_NAME, "body").text)
        shot(page.strip("/").replace("/", "_"))
    # the token never reaches a page
    assert TOKEN not in browser.page_source
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{n}.png" for n in ("login", "dashboard", "courses", "course", "confirm",
                             "course-after-requeue", "retrievals", "rules", "config",
                             "api_v1_docs"))
