"""Services as separate processes against the test session's Redis and Postgres."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RATCHET = str(Path(sys.executable).with_name("ratchet"))


@dataclass
class ServiceProcesses:
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, label: str | None = None, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start service ``name``; ``label`` tells replicas of one service apart."""
        label = label or name
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{label}.log", "ab") as log:
            proc = subprocess.Popen([RATCHET, "service", name], env={**self.env, **extra_env},
                                    stdout=log, stderr=subprocess.STDOUT)
        self.procs[label] = proc
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str, timeout: float = 15) -> int | None:
        proc = self.procs.get(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        order = ("api", "strategy", "marketdata", "execution")
        for label in sorted(self.procs, key=lambda lb: next(
                (i for i, n in enumerate(order) if lb.startswith(n)), len(order))):
            self.stop(label)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""
