"""Container health check for the one Ratchet image (its Dockerfile HEALTHCHECK).

One image runs four services, so the check finds out which one it is guarding: the service
named on the command line (``healthcheck.py api``), else the ``ratchet service NAME`` process it
finds in the container: PID 1 in the usual case, any process when an init (``--init``) is PID 1.

- api: GET http://127.0.0.1:$RATCHET_API_PORT/healthz answers 200.
- marketdata, strategy, execution: the Redis key ``ratchet.ready.<service>.<replica>`` exists
  (each service refreshes it every 5 s with a 15 s TTL, so a process that is gone or frozen turns
  unhealthy within 15 s).
- anything else (``ratchet migrate``, a shell): healthy; there is nothing to probe.

``--liveness`` (for a probe that restarts the container): a worker counts as alive when Redis
cannot be asked, since then its ready key says nothing about the worker, and restarting every
worker because Redis is away would only add a restart storm to the outage. It is unhealthy only
when Redis answers and the key is gone.

Exit 0 healthy, 1 unhealthy. Standard library plus the ``redis`` client the image has anyway.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Sequence

WORKERS = ("marketdata", "strategy", "execution")


def service_from_cmdline(argv: Sequence[str]) -> str | None:
    """``[..., "ratchet", "service", "api"]`` -> ``"api"``; None for any other command."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "service" and i > 0 and os.path.basename(argv[i - 1]).startswith("ratchet"):
            return argv[i + 1]
    return None


def cmdline(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running_service() -> str | None:
    """The service of PID 1, else of the first ``ratchet service`` process found."""
    try:
        others = sorted((p for p in os.listdir("/proc") if p.isdigit() and p != "1"), key=int)
    except OSError:
        others = []
    for pid in ["1", *others]:
        found = service_from_cmdline(cmdline(pid))
        if found is not None:
            return found
    return None


def ready_key(service: str, env: dict[str, str]) -> str:
    return f"ratchet.ready.{service}.{env.get('RATCHET_REPLICA', '0')}"


def check_api(env: dict[str, str]) -> bool:
    url = f"http://127.0.0.1:{env.get('RATCHET_API_PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - fixed local URL
            return bool(response.status == 200)
    except OSError:
        return False


def check_worker(service: str, env: dict[str, str], liveness: bool = False) -> bool:
    import redis

    client = redis.Redis.from_url(env["RATCHET_REDIS_URL"], socket_timeout=3)
    try:
        return bool(client.exists(ready_key(service, env)))
    except redis.RedisError:
        return liveness
    finally:
        client.close()


def main(argv: Sequence[str]) -> int:
    env = dict(os.environ)
    liveness = "--liveness" in argv[1:]
    named = [arg for arg in argv[1:] if not arg.startswith("--")]
    service = named[0] if named else running_service()
    if service == "api":
        healthy = check_api(env)
    elif service in WORKERS:
        healthy = check_worker(service, env, liveness)
    else:
        healthy = True
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
