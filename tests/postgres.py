"""A throw-away PostgreSQL server for tests: Debian's initdb into a temp folder, postgres on a
free loopback port with its unix socket in the same folder, stopped by PID.

PostgreSQL refuses to run as root, so when the tests run as root initdb and the server run as
the ``postgres`` system user (created by the Debian package): subprocess drops to it, so the
PID the test holds is the postmaster's own.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from peers import free_port


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            pytest.skip("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("psycopg is not installed (pip install 'rtnode[postgres]')")
        self.folder = Path(tempfile.mkdtemp(prefix="rtnode-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run the server")
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.folder, 0o755)

    def _owner(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": [],
                "env": {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8",
                        "HOME": str(self.folder)}}

    @property
    def url(self) -> str:
        return f"postgresql://rtnode@127.0.0.1:{self.port}/rtnode"

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                        "rtnode", "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                       timeout=120, cwd=self.folder, **self._owner())
        log = open(self.folder / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, **self._owner())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log}")
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p",
                                    str(self.port)], capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"postgres did not come up: {self.log}")
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "rtnode", "rtnode"], check=True, capture_output=True, timeout=60)
        return self

    @property
    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT to the postmaster)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postgres():
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
