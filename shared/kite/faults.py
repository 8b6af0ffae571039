"""Faults on demand, so Ratchet's reconciliation and watchdogs can be exercised against "Kite".

HTTP faults are an ASGI middleware in front of the Kite routes (never the ``/_sim`` admin routes):
answer an error (429, 5xx, any Kite error type, or a proxy's HTML page), delay the response, or
let the request take effect and then lose the response (the connection is cut after the headers).
Order rejections and ticker faults (drop the sockets, stall the ticks) live in the book and the hub.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import KiteError, server_error, too_many_requests

ADMIN_PREFIX = "/_sim"


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults armed at start (CLI flags); counts apply to the first N matching requests."""

    delay_ms: int = 0
    http_429: int = 0
    http_5xx: int = 0
    http_5xx_code: int = 503
    reject_orders: int = 0
    lose_responses: int = 0
    drop_socket_every_s: float = 0.0
    stall_every_s: float = 0.0
    stall_for_s: float = 0.0


class HttpFault(BaseModel):
    """One HTTP fault rule (also the admin endpoint's body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["error", "lose", "delay"]
    count: int = Field(default=1, ge=0, description="requests it affects; 0 = until cleared")
    status: int = Field(default=503, ge=400, le=599)
    error_type: str | None = None
    message: str | None = None
    html: bool = False
    delay_ms: int = Field(default=0, ge=0, le=120_000)
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()


class LostResponse(Exception):
    """Raised after the headers went out, so the server cuts the connection (fault ``lose``)."""


@dataclass
class FaultState:
    """Armed faults; mutated by admin calls and consumed by requests (one event loop)."""

    rules: list[list[Any]] = field(default_factory=list)  # [HttpFault, remaining]
    reject_left: int = 0
    reject_message: str = "RMS:Rule: simulated rejection (fault injection)"
    hits: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, cfg: FaultConfig) -> FaultState:
        state = cls(reject_left=cfg.reject_orders)
        if cfg.delay_ms:
            state.add(HttpFault(kind="delay", count=0, delay_ms=cfg.delay_ms))
        if cfg.http_429:
            state.add(HttpFault(kind="error", count=cfg.http_429, status=429))
        if cfg.http_5xx:
            state.add(HttpFault(kind="error", count=cfg.http_5xx, status=cfg.http_5xx_code))
        if cfg.lose_responses:
            state.add(HttpFault(kind="lose", count=cfg.lose_responses, paths=("/orders",),
                                methods=("POST",)))
        return state

    def add(self, fault: HttpFault) -> None:
        with self._lock:
            self.rules.append([fault, fault.count or -1])

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.reject_left = 0

    def take(self, kind: str, method: str, path: str) -> HttpFault | None:
        with self._lock:
            for rule in self.rules:
                fault, left = rule
                if fault.kind != kind or left == 0:
                    continue
                if fault.paths and not any(path.startswith(p) for p in fault.paths):
                    continue
                if fault.methods and method not in fault.methods:
                    continue
                if left > 0:
                    rule[1] = left - 1
                self.hits[kind] = self.hits.get(kind, 0) + 1
                self.rules = [r for r in self.rules if r[1] != 0]
                return fault
        return None

    def take_rejection(self) -> str | None:
        if self.reject_left <= 0:
            return None
        self.reject_left -= 1
        self.hits["reject"] = self.hits.get("reject", 0) + 1
        return self.reject_message

    def describe(self) -> dict[str, Any]:
        return {"rules": [{**r[0].model_dump(), "remaining": r[1]} for r in self.rules],
                "reject_orders": self.reject_left, "hits": dict(self.hits)}


def _error_for(fault: HttpFault) -> KiteError:
    if fault.status == 429:
        err = too_many_requests()
    elif fault.status >= 500:
        err = server_error(fault.status)
    else:
        err = KiteError("InputException", "Simulated error", fault.status)
    return KiteError(fault.error_type or err.error_type, fault.message or err.message,
                     fault.status)


class FaultMiddleware:
    """ASGI middleware applying ``FaultState`` to every Kite route."""

    def __init__(self, app: ASGIApp, state: FaultState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        # Every fault a request meets is taken as it arrives: a delayed request its client
        # abandoned must not wake later and consume a fault armed after it.
        delay = self.state.take("delay", method, path)
        error = self.state.take("error", method, path)
        lose = None if error is not None else self.state.take("lose", method, path)
        if delay is not None:
            await asyncio.sleep(delay.delay_ms / 1000)
        if error is not None:
            await self._answer_error(error, send)
            return
        if lose is None:
            await self.app(scope, receive, send)
            return

        async def send_then_cut(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body":
                raise LostResponse("fault injection: the response to this request is lost")

        await self.app(scope, receive, send_then_cut)

    @staticmethod
    async def _answer_error(fault: HttpFault, send: Send) -> None:
        err = _error_for(fault)
        if fault.html:
            body = (f"<html><head><title>{fault.status}</title></head><body><center><h1>"
                    f"{fault.status}</h1></center><hr><center>nginx</center></body></html>"
                    ).encode()
            ctype = b"text/html"
        else:
            body = orjson.dumps(err.body())
            ctype = b"application/json"
        await send({"type": "http.response.start", "status": fault.status,
                    "headers": [(b"content-type", ctype),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Kite's per-key request rates: a sliding one-second window per (api key, bucket)."""

    def __init__(self, per_second: dict[str, int]) -> None:
        self.per_second = per_second
        self._seen: dict[tuple[str, str], list[float]] = {}

    def check(self, api_key: str, bucket: str) -> None:
        limit = self.per_second.get(bucket, 0)
        if limit <= 0:
            return
        now = time.monotonic()
        window = [t for t in self._seen.get((api_key, bucket), []) if now - t < 1.0]
        if len(window) >= limit:
            self._seen[(api_key, bucket)] = window
            raise too_many_requests()
        window.append(now)
        self._seen[(api_key, bucket)] = window
