"""``Idempotency-Key`` on POSTs under /api/v1: a retry with the same key, from the same caller,
gets the first response again, and the effect happens once.

The key is scoped by the caller's credential (a hash of the API key or of the session token), so
callers cannot see or collide with each other's keys, and a credential that no longer names a
caller (a revoked key, an ended session) gets no answer from the store: its request goes to the
route, which refuses it. Redis holds, per key: a claim while the first request runs (a concurrent
duplicate gets 409), then the response (kept 24 h) together with a fingerprint of the request
(the same key with a different request gets 422). Responses that had no effect (401, 403, 429,
5xx) are not kept, so such a request may be retried. A response that carries a secret (a new API
key's) is never kept: a retry learns that the first request succeeded (409) and where to look.
When Redis cannot be reached a keyed request is refused (503) rather than risk doing it twice.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .middleware import read_body, replay_body
from .problems import problem_response

log = logging.getLogger("ratchet.api")

HEADER = "idempotency-key"
REPLAYED = "Idempotent-Replayed"
KEEP_S = 24 * 3600
CLAIM_S = 60
NOT_KEPT = {401, 403, 429}
_PREFIX = "api:idem:"
_KEPT_HEADERS = {"content-type", "location", "retry-after"}


Credential = tuple[str, str]
"""("key", an API key) or ("session", a session token): what a request presents."""


def credential(headers: Headers) -> Credential | None:
    """The credential a request presents, API key first (as the routes take it)."""
    key = headers.get("x-api-key")
    if key:
        return "key", key
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "ratchet_session" and value:
            return "session", value
    return None


def caller_scope(presented: Credential) -> str:
    """Whose keys these are: a hash of the credential, never the credential itself."""
    kind, secret = presented
    return kind[0] + hashlib.sha256(secret.encode()).hexdigest()[:40]


class IdempotencyMiddleware:
    """``is_live`` tells whether a credential names a caller now; ``secret_paths`` are the
    POST paths whose responses carry a secret, which is shown once and so never stored."""

    def __init__(
        self,
        app: ASGIApp,
        redis: Callable[[], aioredis.Redis],
        is_live: Callable[[Credential], Awaitable[bool]],
        secret_paths: frozenset[str],
        prefix: str = "/api/v1/",
    ) -> None:
        self.app = app
        self.redis = redis
        self.is_live = is_live
        self.secret_paths = secret_paths
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(
            self.prefix
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        idem_key = headers.get(HEADER)
        presented = credential(headers)
        if idem_key is None or presented is None or not await self.is_live(presented):
            # no key, or no usable credential: the route decides (and refuses the latter)
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not 1 <= len(idem_key) <= 255 or not idem_key.isascii() or not idem_key.isprintable():
            await problem_response(400, "Idempotency-Key must be 1-255 printable ASCII characters",
                                   instance=path)(scope, receive, send)
            return
        who = caller_scope(presented)

        body = await read_body(receive)
        fingerprint = hashlib.sha256(
            b"\0".join([scope["method"].encode(), path.encode(), scope.get("query_string", b""),
                        body])
        ).hexdigest()
        store_key = _PREFIX + who + ":" + hashlib.sha256(idem_key.encode()).hexdigest()
        client = self.redis()
        try:
            claimed = await client.set(
                store_key, orjson.dumps({"state": "running", "fp": fingerprint}), nx=True,
                ex=CLAIM_S,
            )
            existing = None if claimed else await client.get(store_key)
        except RedisError:
            log.warning("idempotency store unavailable; keyed request refused")
            await problem_response(503, "the idempotency store is unavailable; retry later",
                                   instance=path, headers={"Retry-After": "5"})(
                scope, receive, send)
            return

        if not claimed:
            await self._answer_duplicate(existing, fingerprint, path, scope, receive, send)
            return

        captured: dict[str, object] = {"status": 500, "headers": [], "body": b""}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = [
                    (k.decode(), v.decode()) for k, v in message.get("headers", [])
                    if k.decode().lower() in _KEPT_HEADERS
                ]
            elif message["type"] == "http.response.body":
                captured["body"] = captured["body"] + message.get("body", b"")  # type: ignore[operator]
            await send(message)

        try:
            await self.app(scope, replay_body(body, receive), capture)
        finally:
            await self._remember(client, store_key, fingerprint, captured,
                                 withhold=path in self.secret_paths)

    async def _remember(
        self, client: aioredis.Redis, store_key: str, fingerprint: str,
        captured: dict[str, object], withhold: bool,
    ) -> None:
        status = int(captured["status"])  # type: ignore[call-overload]
        try:
            if status >= 500 or status in NOT_KEPT:
                await client.delete(store_key)
                return
            record: dict[str, object] = {"state": "done", "fp": fingerprint, "status": status}
            if withhold and status < 300:
                record["withheld"] = True
            else:
                record["headers"] = captured["headers"]
                record["body"] = base64.b64encode(captured["body"]).decode()  # type: ignore[arg-type]
            await client.set(store_key, orjson.dumps(record), ex=KEEP_S)
        except RedisError:
            log.warning("could not store an idempotent response; its claim expires in %ss",
                        CLAIM_S)

    async def _answer_duplicate(
        self, existing: bytes | str | None, fingerprint: str, path: str, scope: Scope,
        receive: Receive, send: Send,
    ) -> None:
        if existing is None:  # the first request finished and was not kept: just run this one
            await self.app(scope, replay_body(await read_body(receive), receive), send)
            return
        record = orjson.loads(existing)
        if record.get("fp") != fingerprint:
            response = problem_response(
                422, "this Idempotency-Key was used with a different request", instance=path)
        elif record.get("state") != "done":
            response = problem_response(
                409, "a request with this Idempotency-Key is still being processed",
                instance=path, headers={"Retry-After": "1"})
        elif record.get("withheld"):
            response = problem_response(
                409, f"the first request with this Idempotency-Key succeeded ({record['status']}); "
                "its response held a secret, shown once and not kept: list what it made (GET) "
                "and revoke it if the secret was lost", instance=path)
        else:
            await send({
                "type": "http.response.start",
                "status": record["status"],
                "headers": [(k.encode(), v.encode()) for k, v in record["headers"]]
                + [(REPLAYED.encode(), b"true")],
            })
            await send({"type": "http.response.body", "body": base64.b64decode(record["body"])})
            return
        await response(scope, receive, send)
