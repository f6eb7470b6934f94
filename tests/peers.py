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
    rules/ unless a test says otherwise."""
    data: dict = {"dicom": {"bind": "127.0.0.1", "port": free_port()},
                  "storage": {"root": "storage", "min_free_gb": 0.0},
                  "courses": {"quiet_seconds": 2.0, "max_wait_seconds": 8.0,
                              "poll_seconds": 0.3,
                              "rules_dir": str(Path(__file__).parents[1] / "rules")},
                  # nice 0: on a machine shared with other test runs, niced workers would
                  # yield to those instead of to this node's listener
                  "workers": {"cpu_workers": 2, "nice": 0}}
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
