"""A throwaway PostgreSQL server for the tests and the benchmarks.

:func:`start` runs ``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` packages (the
binaries on PATH, else the newest ``/usr/lib/postgresql/<version>/bin``) in a temporary
folder, as a non-root user when run as root (the server refuses root), listening only on
a Unix socket in that folder. It is made for speed, not durability (``fsync=off``), unless asked to be durable.
:meth:`PgServer.stop` stops it; :meth:`restart` stops and starts it again on the same
data (what a database restart does to connected clients).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgServer", "bindir", "start"]

#: Settings for a fast, disposable server.
_CONF = """
listen_addresses = ''
unix_socket_directories = '{sock}'
max_connections = 200
shared_buffers = 32MB
log_min_messages = warning
"""
#: ... and, unless a durable server is asked for, without waiting for the disk.
_FAST = """
fsync = off
synchronous_commit = off
full_page_writes = off
"""


def bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _as_user() -> list[str]:
    """The prefix that runs a command as the server's user (none unless we are root)."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run the server")


@dataclass
class PgServer:
    root: Path
    bin: Path
    prefix: list[str]

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` on this server's socket."""
        return f"postgresql:///{database}?host={self.socket_dir}&user=postgres"

    def _ctl(self, *args: str) -> None:
        cmd = [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}"
                f"{done.stderr}\n--- server log ---\n{log}"
            )

    def start(self) -> None:
        self._ctl("-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def restart(self) -> None:
        self._ctl("-m", "fast", "-w", "-l", str(self.log), "restart")

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def start(*, durable: bool = False) -> PgServer:
    """A running server in a new temporary folder (RuntimeError with the server's log
    when it cannot start); ``durable``: commits wait for fsync, as in production."""
    found = bindir()
    if found is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package 'postgresql')")
    root = Path(tempfile.mkdtemp(prefix="runner-pg-"))
    os.chmod(root, 0o755)
    prefix = _as_user()
    server = PgServer(root, found, prefix)
    server.socket_dir.mkdir()
    os.chmod(server.socket_dir, 0o777)
    if prefix:
        user = prefix[2]
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(server.socket_dir, entry.pw_uid, entry.pw_gid)
    init = subprocess.run(
        [
            *prefix,
            str(found / "initdb"),
            "-D",
            str(server.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        server.remove()
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
    with open(server.data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(_CONF.format(sock=server.socket_dir) + ("" if durable else _FAST))
    try:
        server.start()
    except RuntimeError:
        server.remove()
        raise
    return server
