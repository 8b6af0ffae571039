"""``ratchet run``: the whole system on one machine, no Docker, no root.

Starts a real Redis and a real PostgreSQL from binaries in the virtualenv (unless
``RATCHET_REDIS_URL`` / ``RATCHET_DATABASE_URL`` point elsewhere), migrates, makes sure the
bootstrap admin key exists, starts the four services as separate processes, prints
``ready: http://127.0.0.1:PORT/`` once all are up, restarts a service that dies, and on
SIGTERM/SIGINT stops everything in order: api, strategy, marketdata, execution, then the servers.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from ratchet.servers import EmbeddedPostgres, EmbeddedRedis, free_port
from shared.auth import create_api_key, hash_secret, verify_api_key
from shared.config import Settings
from shared.store.db import make_engine, make_sessions
from shared.store.migrate import upgrade
from shared.store.models import ApiKey

SERVICES = ("marketdata", "execution", "strategy", "api")  # start order
STOP_ORDER = ("api", "strategy", "marketdata", "execution")


def service_command(name: str) -> list[str]:
    """The one definition of how a service is started (compose, systemd and run agree)."""
    return ["ratchet", "service", name]


def _die_with_parent() -> None:  # runs in the child before exec
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the child gets SIGTERM if we die


def ensure_admin_key(settings: Settings, home: Path) -> Path:
    """The bootstrap admin key in ``$RATCHET_HOME/admin-key`` (0600), reused by later runs."""
    path = home / "admin-key"
    engine = make_engine(settings.require_database_url(), pool_size=1)
    sessions = make_sessions(engine)
    try:
        with sessions.begin() as session:
            if path.exists():
                secret = path.read_text().strip()
                if verify_api_key(session, secret) is None:
                    session.add(ApiKey(name="bootstrap-admin", key_hash=hash_secret(secret),
                                       prefix=secret[:8], role="admin"))
            else:
                secret = create_api_key(session, "bootstrap-admin", "admin")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secret + "\n")
        path.chmod(0o600)
    finally:
        engine.dispose()
    return path


@dataclass
class ManagedService:
    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        command = service_command(self.name)
        executable = Path(sys.executable).with_name("ratchet")
        if executable.exists():
            command[0] = str(executable)
        else:
            command = [sys.executable, "-m", "ratchet.cli", *command[1:]]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - setsid + pdeathsig only
            )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"{self.name} did not stop within {timeout:.0f}s; killing it", flush=True)
            self.process.kill()
            self.process.wait()


@dataclass
class LocalSystem:
    settings: Settings
    home: Path
    redis_server: EmbeddedRedis | None = None
    pg_server: EmbeddedPostgres | None = None
    services: dict[str, ManagedService] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def say(self, line: str) -> None:
        print(line, flush=True)

    def start_servers(self) -> None:
        if not self.settings.redis_url:
            self.say(f"starting redis (data in {self.home / 'redis'})")
            self.redis_server = EmbeddedRedis(self.home / "redis").start()
            self.settings.redis_url = self.redis_server.url
        if not self.settings.database_url:
            self.say(f"starting postgres (data in {self.home / 'pg'})")
            self.pg_server = EmbeddedPostgres(self.home / "pg").start()
            self.settings.database_url = self.pg_server.url
        self.say("migrating the database")
        upgrade(self.settings.require_database_url())
        self.write_servers_file()

    def write_servers_file(self) -> None:
        """Addresses of the running parts, so that `ratchet keys create` and friends find the
        embedded servers, and a person (or Prometheus) finds each worker's metrics."""
        servers = {
            "redis_url": self.settings.redis_url,
            "database_url": self.settings.database_url,
            "api": f"http://127.0.0.1:{self.settings.api_port}/",
            "metrics": {name: f"http://127.0.0.1:{port}/metrics"
                        for name, port in self.metrics_ports.items()},
        }
        (self.home / "servers.json").write_text(json.dumps(servers, indent=2) + "\n")

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RATCHET_HOME=str(self.home),
            RATCHET_REDIS_URL=self.settings.require_redis_url(),
            RATCHET_DATABASE_URL=self.settings.require_database_url(),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start_services(self) -> None:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = self.service_env()
        for name in SERVICES:
            own_env = dict(env)
            if name != "api":  # the api serves /metrics itself, on its own port
                self.metrics_ports[name] = free_port()
                own_env["RATCHET_METRICS_PORT"] = str(self.metrics_ports[name])
            service = ManagedService(name, own_env, logs / f"{name}.log")
            service.start()
            self.services[name] = service
        self.write_servers_file()
        self.say(f"services started; their JSON logs are in {logs}/")

    def wait_ready(self, timeout_s: float = 300.0) -> bool:
        client = redis.Redis.from_url(self.settings.require_redis_url())
        url = f"http://127.0.0.1:{self.settings.api_port}/readyz"
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and not self.stop_event.is_set():
                for service in self.services.values():
                    if not service.alive():
                        self.say(f"error: {service.name} exited during start-up; "
                                 f"see {service.log_path}")
                        return False
                workers_ready = all(
                    client.exists(f"ratchet.ready.{name}.{self.settings.replica}")
                    for name in ("execution", "marketdata", "strategy")
                )
                if workers_ready and _http_ok(url):
                    return True
                self.stop_event.wait(0.25)
        finally:
            client.close()
        return False

    def supervise(self) -> None:
        """Restart a service that died (not one we are stopping), with a short back-off."""
        while not self.stop_event.wait(1.0):
            for service in self.services.values():
                if not service.alive() and not self.stop_event.is_set():
                    code = service.process.returncode if service.process else None
                    service.restarts += 1
                    self.say(f"{service.name} exited with {code}; restarting")
                    time.sleep(min(5.0, 0.5 * service.restarts))
                    service.start()

    def shutdown(self) -> None:
        self.say("stopping services")
        for name in STOP_ORDER:
            if name in self.services:
                self.services[name].stop()
        if self.pg_server is not None:
            self.say("stopping postgres")
            self.pg_server.stop()
        if self.redis_server is not None:
            self.say("stopping redis")
            self.redis_server.stop()
        (self.home / "servers.json").unlink(missing_ok=True)
        self.say("stopped")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def run(settings: Settings) -> int:
    home = settings.home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    system = LocalSystem(settings, home)

    def _on_signal(signum: int, _frame: object) -> None:
        system.stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    code = 0
    kite_sim = None
    try:
        system.start_servers()
        key_path = ensure_admin_key(settings, home)
        if settings.feed == "kite-sim":  # the simulator plays Kite: started here and logged in to
            from ratchet.kite_cli import start_local_kite_sim

            kite_sim = start_local_kite_sim(settings, home, system.say)
        system.start_services()
        if system.wait_ready():
            system.say(f"admin key: {key_path}")
            system.say(f"ready: http://127.0.0.1:{settings.api_port}/")
            system.supervise()
        elif not system.stop_event.is_set():
            code = 1
    finally:
        system.shutdown()
        if kite_sim is not None:
            kite_sim.stop()
    return code
