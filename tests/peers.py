"""Real DICOM peers for tests: an ``rtnode serve`` process and DCMTK's command-line tools.

Everything listens on loopback ports chosen free at the time, and every process started here is
stopped by its PID — no fixed ports, no leftovers between tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import yaml

RTNODE = [sys.executable, "-m", "rtnode"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(tool: str) -> str:
    """The path of a peer program; a missing one fails the test (CI installs them all)."""
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} not found: run scripts/setup.sh (it installs DCMTK, Orthanc, "
                           f"dicom3tools and Redis)")
    return path


def dcmtk_env() -> dict[str, str]:
    # DCMTK keeps Nagle's algorithm on unless told otherwise, which adds ~40 ms per small
    # instance on loopback; every receiver sees the same, so tests switch it off for speed.
    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(port: int, files: Iterable[Path], *, called: str = "RTNODE",
             calling: str = "STORESCU", extra: Sequence[str] = (),
             timeout: float = 300) -> subprocess.CompletedProcess:
    """Send files with storescu -v (one association), not stopping at a failed store;
    stdout holds storescu's whole log (it writes to both streams)."""
    cmd = [require("storescu"), "-v", "-nh", "-aet", calling, "-aec", called, *extra,
           "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=dcmtk_env())


def store_responses(output: str) -> list[str]:
    """The status text of every 'Received Store Response (...)' line storescu printed."""
    out = []
    for line in output.splitlines():
        if "Received Store Response" in line:
            out.append(line[line.index("(") + 1: line.rindex(")")])
    return out


def echoscu(port: int, *, called: str = "RTNODE", calling: str = "ECHOSCU",
            timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = [require("echoscu"), "-v", "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=dcmtk_env())


def write_config(folder: Path, **sections: dict) -> Path:
    """A config.yaml under folder with storage.root = folder/storage and the given sections.

    Courses settle fast (quiet 2 s, max-wait 8 s, polled every 0.3 s) and read the repository's
    rules/ unless a test says otherwise; the HTTP dashboard listens on a free loopback port."""
    data: dict = {"dicom": {"bind": "127.0.0.1", "port": free_port()},
                  "storage": {"root": "storage", "min_free_gb": 0.0},
                  "courses": {"quiet_seconds": 2.0, "max_wait_seconds": 8.0,
                              "poll_seconds": 0.3,
                              "rules_dir": str(Path(__file__).parents[1] / "rules")},
                  # nice 0: on a machine shared with other test runs, niced workers would
                  # yield to those instead of to this node's listener
                  "workers": {"cpu_workers": 2, "nice": 0},
                  # the dashboard too, on its own free port (never the default 8043)
                  "http": {"port": free_port()}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class NodeProcess:
    """``rtnode serve --config FILE`` in a child process, with its log captured to a file."""

    def __init__(self, config: Path, env: dict[str, str] | None = None):
        self.config = Path(config)
        # tests/ on the path, so that stages.plugins can name tests' own stage modules
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]), **(env or {})}
        data = yaml.safe_load(self.config.read_text())
        self.port = int(data["dicom"]["port"])
        http = data.get("http") or {}
        self.http_url = (f"{'https' if http.get('tls_cert') else 'http'}://127.0.0.1:"
                         f"{http.get('port', 8043)}") if http.get("enabled", True) else None
        self.ae_title = data["dicom"].get("ae_title", "RTNODE")
        self.storage = self.config.parent / data["storage"]["root"]
        self.log_path = self.config.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "NodeProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*RTNODE, "serve", "--config", str(self.config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtnode serve exited with {self.proc.returncode}:\n{self.log}")
            # node.json is written once the listener is bound (no TCP probe: a bare connect
            # holds an association slot until the ACSE timeout)
            info = self.storage / "node.json"
            if info.exists():
                try:
                    if json.loads(info.read_text())["pid"] == self.proc.pid:
                        return self
                except (ValueError, KeyError):
                    pass  # being rewritten
            time.sleep(0.1)
        raise RuntimeError(f"rtnode serve did not come up in {timeout} s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the node by PID and wait; returns its exit code (-9 after SIGKILL)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(10)
        self._log.close()
        return code

    def kill9(self) -> int:
        return self.stop(signal.SIGKILL)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run an ``rtnode`` subcommand against this node's config."""
        return subprocess.run([*RTNODE, *args, "--config", str(self.config)],
                              capture_output=True, text=True, timeout=120, env=self.env)

    def cli_json(self, *args: str):
        r = self.cli(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def processes(self) -> list[int]:
        """PIDs of every live process started for this node (serve, consumers, Huey workers)."""
        mine = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().split(") ", 1)[1][0]
            except OSError:
                continue
            if state != "Z" and "rtnode" in cmd and (
                    str(self.config) in cmd or str(self.storage) in cmd):
                mine.append(int(entry.name))
        return mine

    def wait_no_processes(self, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.processes()

    def courses(self) -> list[dict]:
        return self.cli_json("courses")

    def wait_courses(self, predicate, timeout: float = 90.0, what: str = "") -> list[dict]:
        """Poll ``rtnode courses --json`` until predicate(courses) holds."""
        deadline = time.monotonic() + timeout
        while True:
            courses = self.courses()
            if predicate(courses):
                return courses
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}: {courses}\n"
                                     f"{self.log[-3000:]}")
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


# -- raw DICOM requests (for malformed input the regular SCUs refuse to send) ------------------

def raw_association(port: int, contexts: Sequence[tuple[str, str]], *, calling: str = "RAWSCU",
                    called: str = "RTNODE", timeout: float = 30):
    """A pynetdicom association proposing exactly these (SOP class, transfer syntax) pairs."""
    from pynetdicom import AE
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association refused"
    return assoc


def context_id(assoc, sop_class: str) -> int:
    return next(cx.context_id for cx in assoc.accepted_contexts
                if cx.abstract_syntax == sop_class)


def raw_c_store(assoc, cx_id: int, sop_class: object, sop_uid: object, data: bytes,
                message_id: int | None = 1):
    """Send one C-STORE-RQ with whatever request fields and data set bytes it is given, and
    return the response (a C_STORE primitive) or None when none came before the DIMSE timeout."""
    from io import BytesIO

    from pynetdicom import _config
    from pynetdicom.dimse_primitives import C_STORE
    req = C_STORE()
    req.MessageID = message_id
    strict = _config.VALIDATORS["UI"]
    _config.VALIDATORS["UI"] = lambda value: (True, "")  # malformed UIDs are the point here
    try:
        req.AffectedSOPClassUID = sop_class
        req.AffectedSOPInstanceUID = sop_uid
    finally:
        _config.VALIDATORS["UI"] = strict
    req.Priority = 2
    req.DataSet = BytesIO(data) if data else None  # None: CommandDataSetType "no data set"
    # pause the association's own reactor, as pynetdicom's send_* methods do, or it takes the
    # response off the queue first
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, cx_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    return rsp


def encode_dataset(ds, transfer_syntax: str = "1.2.840.10008.1.2.1") -> bytes:
    """A data set's bytes as a C-STORE carries them (Explicit VR Little Endian by default)."""
    import io

    from pydicom.dataset import FileMetaDataset

    from rtnode.store.part10 import split_part10
    ds = ds.copy()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2") or \
        "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3") or "1.2.3"
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return split_part10(buf.getvalue())[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (VmRSS) or its peak (VmHWM), KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def event_count(storage: Path, kind: str) -> int:
    """Events of one kind in a node's index (any kind, not only those `rtnode status` lists)."""
    import sqlite3
    db = sqlite3.connect(storage / "index.sqlite", timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM events WHERE kind=?", (kind,)).fetchone()[0]
    finally:
        db.close()


def headless_chromium(profile: Path, window: str = "1400,1000"):
    """Debian's chromium driven by chromium-driver through selenium, headless, with a fresh
    profile and no background traffic (the test machine has no network beyond loopback)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_path).exists():
        raise RuntimeError("chromedriver not found: run scripts/setup.sh --dev (chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run",
                 f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(120)
    return driver
