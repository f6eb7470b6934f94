"""The REST API, /metrics and /healthz of a running ``rtnode serve`` that received a phantom
course: the same keys as the CLI's --json, logins for state changes, no file outside the
storage root, Prometheus text that parses and moves when instances arrive."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from peers import NodeProcess, echoscu, store_responses, storescu, write_config
from test_courses import write_course
from test_receive import _variant
from rtnode.phantom import Patient

pytestmark = pytest.mark.network

TOKEN = "a-shared-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def key_paths(data, prefix: str = "") -> set[str]:
    """Every key path of a JSON value (list items share the path '[]')."""
    paths: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            paths.add(prefix + str(k))
            paths |= key_paths(v, f"{prefix}{k}.")
    elif isinstance(data, list):
        for v in data:
            paths |= key_paths(v, f"{prefix}[].")
    return paths


@pytest.fixture(scope="module")
def web_node(tmp_path_factory):
    """A node with a token login, which received one phantom course and ran it to the end."""
    folder = tmp_path_factory.mktemp("webnode")
    node = NodeProcess(write_config(folder, http={"token": TOKEN,
                                                  "username": "physicist",
                                                  "password": "correct horse"},
                                    remotes={"PACS": {"ae_title": "PACS", "host": "127.0.0.1",
                                                      "port": 104}})).start()
    files = write_course(folder / "course", Patient(patient_id="WEB1"))
    r = storescu(node.port, [f for group in files.values() for f in group])
    assert set(store_responses(r.stdout)) == {"Success"}
    node.wait_courses(lambda cs: len(cs) == 1 and cs[0]["state"] == "done", timeout=300,
                      what="the phantom course to finish")
    node.files = files
    yield node
    node.stop()


def api(node, path: str, **kw) -> httpx.Response:
    return httpx.get(node.http_url + path, headers=AUTH, timeout=60, **kw)


def add_retrieval_job(node) -> None:
    """A cohort job as `rtnode retrieve` records it (one series to move), so that the
    retrievals listing has a row to compare."""
    from rtnode.cohorts.retrieve import FoundSeries, Retriever
    from rtnode.cohorts.selectors import Selectors
    from rtnode.config import load_config
    from rtnode.store.index import Index

    index = Index(node.storage / "index.sqlite")
    try:
        retriever = Retriever(load_config(node.config), index, "PACS", lambda event: None)
        retriever.create_job(Selectors(patient_ids=["COHORT1"], modalities=["CT"]),
                             [FoundSeries("COHORT1", "1.2.3.4", "1.2.3.4.5", "CT", 10, 0)])
    finally:
        index.close()


def test_every_listing_has_the_cli_json_keys(web_node):
    node = web_node
    add_retrieval_job(node)
    pairs = [
        ("/api/v1/status", ["status"]),
        ("/api/v1/studies", ["studies"]),
        ("/api/v1/series", ["series"]),
        ("/api/v1/instances", ["instances"]),
        ("/api/v1/instances?patient_id=WEB1", ["instances", "--patient-id", "WEB1"]),
        ("/api/v1/courses", ["courses"]),
        ("/api/v1/courses?state=done", ["courses", "--state", "done"]),
        ("/api/v1/courses/1", ["course", "show", "1"]),
        ("/api/v1/stages", ["stages"]),
        ("/api/v1/retrievals", ["retrievals"]),
    ]
    for path, args in pairs:
        r = api(node, path)
        assert r.status_code == 200, (path, r.text)
        cli = node.cli_json(*args)
        assert key_paths(r.json()) == key_paths(cli), path
        if args[0] != "status":  # status carries a live disk figure; the rest is settled
            assert r.json() == cli, path
        assert (len(r.json()) > 0) == (len(cli) > 0), path
    # the same course list, objects and stages: data, not just keys
    course = api(node, "/api/v1/courses/1").json()
    assert course["patient_id"] == "WEB1" and course["state"] == "done"
    assert {s["stage"] for s in course["stages"]} >= {"manifest", "segment", "dvh", "qc"}
    # config show (YAML) and /api/v1/config: the same keys, the secrets hidden
    shown = yaml.safe_load(node.cli("config", "show").stdout)
    config = api(node, "/api/v1/config").json()
    assert key_paths(config) == key_paths(shown)
    assert TOKEN not in json.dumps(config) and "correct horse" not in json.dumps(config)
    assert config["http"]["token"] == "(hidden)" and config["http"]["password"] == "(hidden)"
    # the documented OpenAPI schema lists every endpoint
    schema = api(node, "/api/v1/openapi.json").json()
    for path, _ in pairs:
        assert path.split("?")[0].replace("/1", "/{course_id}") in schema["paths"]


def test_keys_and_endpoints_are_documented(web_node):
    """The README's --json keys section names every key of the course and status objects
    (documented once, for CLI and API); docs/API.md names every endpoint."""
    repo = Path(__file__).parents[1]
    readme = (repo / "README.md").read_text()
    course = api(web_node, "/api/v1/courses/1").json()
    status = api(web_node, "/api/v1/status").json()
    for key in list(course) + list(status) + list(course["stages"][0]):
        assert f"`{key}" in readme, key
    doc = (repo / "docs" / "API.md").read_text()
    schema = api(web_node, "/api/v1/openapi.json").json()
    for path in schema["paths"]:
        short = path.removeprefix("/api/v1").replace("{course_id}", "{id}")
        assert short.split("/{queue}")[0] in doc, path


def test_state_changes_need_a_login(web_node):
    node = web_node
    url = node.http_url
    actions = ["/api/v1/courses/1/requeue", "/api/v1/courses/1/cancel",
               "/api/v1/courses/1/send", "/api/v1/queues/cpu/pause",
               "/api/v1/queues/cpu/resume", "/api/v1/requeue-failed"]
    for path in actions:
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"},
                        {"Authorization": "Basic cGh5c2ljaXN0Ondyb25n"}):  # physicist:wrong
            r = httpx.post(url + path, json={}, headers=headers, timeout=30)
            assert r.status_code == 401, (path, headers, r.status_code)
    # the dashboard's form posts too, without a session
    r = httpx.post(url + "/actions/cancel", data={"course_id": "1"}, timeout=30)
    assert r.status_code in (401, 403)
    # nothing changed
    course = node.cli_json("course", "show", "1")
    assert course["state"] == "done"
    assert not node.cli_json("status")["queues"]["cpu"]["paused"]
    # reading patient data needs the login too; health and metrics do not
    assert httpx.get(url + "/api/v1/courses", timeout=30).status_code == 401
    assert httpx.get(url + "/api/v1/courses/1/files/report.html", timeout=30).status_code == 401
    page = httpx.get(url + "/courses/1", timeout=30)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert httpx.get(url + "/metrics", timeout=30).status_code == 200
    assert httpx.get(url + "/healthz", timeout=30).status_code == 200
    # basic auth with the configured user works for reading
    r = httpx.get(url + "/api/v1/courses", auth=("physicist", "correct horse"), timeout=30)
    assert r.status_code == 200 and r.json()[0]["patient_id"] == "WEB1"


def test_actions_with_the_token(web_node):
    node = web_node
    url = node.http_url
    r = httpx.post(url + "/api/v1/queues/gpu/pause", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json() == {"queues": ["gpu"], "paused": True}
    assert node.cli_json("status")["queues"]["gpu"]["paused"]
    r = httpx.post(url + "/api/v1/queues/gpu/resume", headers=AUTH, timeout=30)
    assert r.status_code == 200 and not node.cli_json("status")["queues"]["gpu"]["paused"]
    # a bad stage name is the CLI's sentence, as a 400
    r = httpx.post(url + "/api/v1/courses/1/requeue", json={"stage": "nope"}, headers=AUTH,
                   timeout=30)
    assert r.status_code == 400 and "has stages manifest" in r.json()["detail"]
    assert httpx.post(url + "/api/v1/courses/99/cancel", headers=AUTH,
                      timeout=30).status_code == 404
    before = next(s for s in node.cli_json("course", "show", "1")["stages"]
                  if s["stage"] == "manifest")
    r = httpx.post(url + "/api/v1/courses/1/requeue", json={"stage": "manifest"}, headers=AUTH,
                   timeout=30)
    assert r.status_code == 200 and r.json() == {"course_id": 1, "requeued": 1}

    def rerun(courses):
        m = next(s for s in courses[0]["stages"] if s["stage"] == "manifest")
        return m["state"] == "done" and m["started_at"] > before["started_at"]
    node.wait_courses(rerun, timeout=120, what="manifest to run again")


def raw_get(node, path: str) -> int:
    """A request line exactly as written (no client-side normalisation of '..')."""
    host, port = node.http_url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_downloads_never_leave_the_course_folder(web_node):
    node = web_node
    out = node.storage / "courses" / "1" / "r1"
    r = api(node, "/api/v1/courses/1/files/dvh_metrics.csv")
    assert r.status_code == 200 and r.content == (out / "dvh_metrics.csv").read_bytes()
    names = {f["name"] for f in api(node, "/api/v1/courses/1/files").json()}
    assert {"report.html", "dvh_metrics.csv", "radiomics.csv", "rtstruct_auto.dcm"} <= names
    (out / "escape.csv").symlink_to(node.storage / "index.sqlite")
    try:
        for prefix in ("/api/v1/courses/1/files/", "/courses/1/files/"):
            for name in ("../../../index.sqlite", "..%2F..%2F..%2Findex.sqlite",
                         "%2e%2e/%2e%2e/%2e%2e/index.sqlite", "logs/../../../../index.sqlite",
                         "%2Fetc%2Fpasswd", "..%5C..%5Cindex.sqlite", ".hidden",
                         "seg/../../../../index.sqlite", "escape.csv",
                         "../../../dicom"):
                status = raw_get(node, prefix + name)
                assert status in (400, 403, 404), (prefix + name, status)
        # the symlink is listed nowhere and refused by name
        assert api(node, "/api/v1/courses/1/files/escape.csv").status_code == 403
    finally:
        (out / "escape.csv").unlink()


def metrics(node) -> dict[tuple[str, tuple], float]:
    text = httpx.get(node.http_url + "/metrics", timeout=60).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_move_when_instances_arrive(web_node, tmp_path):
    node = web_node
    m0 = metrics(node)
    received0 = m0[("rtnode_instances_received_total", ())]
    assert received0 == node.cli_json("status")["events"]["received"]
    assert m0[("rtnode_queue_depth", (("queue", "cpu"), ("state", "pending")))] >= 0
    assert ("rtnode_queue_paused", (("queue", "gpu"),)) in m0
    assert m0[("rtnode_storage_free_bytes", ())] > 0
    assert m0[("rtnode_stage_duration_seconds_count", (("stage", "dvh"),))] >= 1
    assert m0[("rtnode_stage_duration_seconds_bucket", (("le", "+Inf"), ("stage", "qc")))] >= 1
    assert m0[("rtnode_courses", (("state", "done"),))] == 1

    files = write_course(tmp_path / "ct", Patient(patient_id="WEB2"), with_rt=False)
    cts = files["CT"][:3]
    assert store_responses(storescu(node.port, cts).stdout) == ["Success"] * 3
    assert store_responses(storescu(node.port, cts[:1]).stdout) == ["Success"]  # duplicate
    bad = _variant(cts[0], tmp_path / "no_study.dcm", StudyInstanceUID=None)
    storescu(node.port, [bad])
    assert echoscu(node.port, called="NOT_US", calling="<b>XSS</b>").returncode != 0
    m1 = metrics(node)
    assert m1[("rtnode_instances_received_total", ())] == received0 + 3
    assert m1[("rtnode_instances_duplicate_total", ())] == \
        m0.get(("rtnode_instances_duplicate_total", ()), 0) + 1
    assert m1[("rtnode_instances_rejected_total", (("status", "0xA900"),))] == \
        m0.get(("rtnode_instances_rejected_total", (("status", "0xA900"),)), 0) + 1
    assert m1[("rtnode_associations_rejected_total", (("reason", "called_ae_not_ours"),))] == \
        m0.get(("rtnode_associations_rejected_total",
                (("reason", "called_ae_not_ours"),)), 0) + 1
    # the refusal is on the dashboard, its calling AE title shown as text, not markup
    page = httpx.get(node.http_url + "/", headers=AUTH, timeout=60).text
    assert "&lt;b&gt;XSS&lt;/b&gt;" in page and "<b>XSS</b>" not in page


def test_healthz_reports_each_part(web_node):
    r = httpx.get(web_node.http_url + "/healthz", timeout=30)
    assert r.status_code == 200
    checks = r.json()["checks"]
    assert set(checks) == {"listener", "index", "queues", "disk"}
    assert all(c["ok"] for c in checks.values())
    assert checks["listener"]["port"] == web_node.port
    assert checks["queues"]["cpu"]["consumers_alive"] >= 1


def test_dashboard_over_tls_and_without_a_login_configured(tmp_path, node_factory):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    node = node_factory(http={"tls_cert": str(cert), "tls_key": str(key)})
    assert node.http_url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))
    r = httpx.get(node.http_url + "/api/v1/status", verify=trust, timeout=30)
    assert r.status_code == 200 and r.json()["node"]["up"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(node.http_url.replace("https://", "http://") + "/healthz", timeout=10)
    # no login configured: reading is open, every state change refused
    r = httpx.post(node.http_url + "/api/v1/queues/cpu/pause", verify=trust, timeout=30)
    assert r.status_code == 403 and "http.token" in r.json()["detail"]
    assert not node.cli_json("status")["queues"]["cpu"]["paused"]


def test_http_port_in_use_stops_the_node_with_the_key_named(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        config = write_config(tmp_path, http={"port": taken.getsockname()[1]})
        node = NodeProcess(config)
        with pytest.raises(RuntimeError, match=r"http\.port"):
            node.start(timeout=60)
        deadline = time.monotonic() + 10
        while node.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.proc.returncode == 2
    finally:
        taken.close()


def test_http_can_be_switched_off(node_factory):
    node = node_factory(http={"enabled": False})
    assert node.http_url is None
    assert node.cli_json("status")["node"]["up"]
    port = yaml.safe_load(node.config.read_text())["http"]["port"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)


@pytest.mark.parametrize("http, message", [
    ("{username: physicist}", "http.username and http.password go together"),
    ("{tls_cert: cert.pem}", "http.tls_cert and http.tls_key go together"),
    ("{token: short}", "http.token must be at least 8 characters"),
    ("{port: 0}", "greater than or equal to 1"),
])
def test_http_config_errors_name_file_and_key(tmp_path, http, message):
    from rtnode.config import ConfigError, load_config

    path = tmp_path / "config.yaml"
    path.write_text(f"storage: {{root: s}}\nhttp: {http}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    text = str(exc.value)
    assert str(path) in text and "http" in text and message in text
