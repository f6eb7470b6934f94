"""A real Orthanc (Debian package, /usr/sbin/Orthanc) as the hospital PACS in tests.

Started on free loopback ports with its storage and index in a test folder, reached over its
REST API with the standard library, stopped by its PID. Usage::

    with OrthancProcess(tmp_path) as pacs:
        send_files(files, pacs.peer)
        assert pacs.instances()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from peers import dcmtk_env, free_port, require

from rtnode.dicom.scu import Peer

ORTHANC = "/usr/sbin/Orthanc"


class OrthancProcess:
    """One Orthanc with its own config, storage and log under ``folder``.

    ``modalities`` become DicomModalities (name → [AET, host, port] or a dict with AllowMove...);
    ``options`` are merged into the JSON configuration last."""

    def __init__(self, folder: Path, aet: str = "ORTHANC",
                 modalities: dict[str, Any] | None = None, **options: Any):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config_path = self.folder / "orthanc.json"
        self.log_path = self.folder / "orthanc.log"
        self.modalities = modalities or {}
        self.options = options
        self.proc: subprocess.Popen | None = None

    def config(self) -> dict[str, Any]:
        """The JSON configuration, built at start so that modalities may be set until then."""
        config = {
            "Name": f"rtnode-test-{self.dicom_port}",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "Plugins": [],
            "HttpsCACertificates": "",
            "SaveJobs": False,
            "StableAge": 1,
        }
        config.update(self.options)
        return config

    @property
    def peer(self) -> Peer:
        return Peer(self.aet, "127.0.0.1", self.dicom_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> "OrthancProcess":
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        binary = ORTHANC if Path(ORTHANC).exists() else require("Orthanc")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, str(self.config_path)], stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} in {timeout} s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """REST call; JSON in and out (bytes out when the answer is not JSON)."""
        data = None if body is None else (
            body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as rsp:
            raw = rsp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def instances(self) -> list[str]:
        """Orthanc IDs of every stored instance."""
        return self.get("/instances")

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """Tag keyword → value of one stored instance (Orthanc's simplified-tags view)."""
        return self.get(f"/instances/{orthanc_id}/simplified-tags")

    def sop_instance_uids(self) -> set[str]:
        return {self.instance_tags(i)["SOPInstanceUID"] for i in self.instances()}

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def upload(self, files: Iterable[Path]) -> None:
        """Fill the PACS the way a TPS would: C-STORE with storescu."""
        files = list(files)
        r = subprocess.run([require("storescu"), "-aec", self.aet, "127.0.0.1",
                            str(self.dicom_port), *map(str, files)], capture_output=True,
                           text=True, env=dcmtk_env(), timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert self.instance_count() >= len(files)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM by PID, SIGKILL if it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "OrthancProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
