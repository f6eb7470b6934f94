"""Orthanc as the hospital PACS in tests: started on free loopback ports, stopped by PID.

It knows the node under test as a DICOM modality (so it answers our C-FIND and C-MOVEs to our AE
title) and exposes its REST API for assertions about what it holds.
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


class Orthanc:
    def __init__(self, folder: Path, modalities: dict[str, tuple[str, int]] | None = None,
                 ae_title: str = "ORTHANC"):
        """modalities: name -> (AE title, port on 127.0.0.1) of peers it may answer/send to."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.port, self.http = free_port(), free_port()
        self.modalities = modalities or {}
        self.proc: subprocess.Popen | None = None

    def config(self) -> dict[str, Any]:
        return {
            "Name": "test-pacs", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "DicomAet": self.ae_title,
            "DicomPort": self.port, "HttpPort": self.http, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False, "StorageCompression": False, "Plugins": [],
            "DicomModalities": {
                name: {"AET": aet, "Host": "127.0.0.1", "Port": port, "AllowEcho": True,
                       "AllowFind": True, "AllowMove": True, "AllowStore": True,
                       "AllowGet": True}
                for name, (aet, port) in self.modalities.items()},
        }

    def start(self, timeout: float = 30.0) -> "Orthanc":
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(self.config()))
        self.log = open(self.folder / "orthanc.log", "ab")
        self.proc = subprocess.Popen([require("Orthanc"), str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()}")
            try:
                self.rest("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc is not None:
            self.log.close()

    def rest(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def instance_count(self) -> int:
        return int(self.rest("/statistics")["CountInstances"])

    def upload(self, files: Iterable[Path]) -> None:
        """Fill the PACS the way a TPS would: C-STORE with storescu."""
        files = list(files)
        r = subprocess.run([require("storescu"), "-aec", self.ae_title, "127.0.0.1",
                            str(self.port), *map(str, files)], capture_output=True, text=True,
                           env=dcmtk_env(), timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert self.instance_count() >= len(files)

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
