"""A PostgreSQL server of the test's own: initdb + pg_ctl on a free port in a temp dir.

Never one the test did not start (one runs on 5432 on these machines). PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` system
user (``runuser``), in a directory of its own under the system temp dir that user owns (not
under pytest's ``pytest-of-root``, which every pytest run resets to mode 0700, out of that
user's reach), removed again by :meth:`PostgresServer.stop`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.services import free_port


def postgres_bin() -> Path | None:
    """The directory of initdb/pg_ctl (PATH first, then Debian's /usr/lib/postgresql/<v>/bin)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    def __init__(self, directory: Path) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bin = bindir
        self.user = "postgres"
        self._as: list[str] = []
        self._own_dir = os.geteuid() == 0
        if self._own_dir:
            self._as = ["runuser", "-u", "postgres", "--"]
            directory = Path(tempfile.mkdtemp(prefix="swarm-test-pg-"))
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> "PostgresServer":
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._as:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists():
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                           capture_output=True, timeout=60, check=False)

    def remove(self) -> None:
        """Stop the server and remove a directory it made for itself (as root)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
