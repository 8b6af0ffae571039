"""Pure ASGI middleware: security headers on every response; a request body size limit; no NUL
characters in a request."""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import problem_response

# The dashboard loads nothing from elsewhere: scripts, styles and data come from this origin.
# One inline style is allowed by its hash: the one Lightweight Charts 5.2.1 (vendored) adds for
# its attribution logo; a new version of the library needs its hash here (the browser test fails
# on any CSP violation).
CHARTS_STYLE_HASH = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"
CSP = (
    f"default-src 'self'; script-src 'self'; style-src 'self' {CHARTS_STYLE_HASH}; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
DOCS_PATHS = ("/docs", "/redoc")


_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_PAGES = [(b"x-frame-options", b"DENY"), (b"content-security-policy", CSP.encode())]
_NO_STORE = (b"cache-control", b"no-store")


class SecurityHeadersMiddleware:
    """Adds the headers at the byte level (the api's own responses never set them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Swagger UI's page loads its own assets: no CSP or frame rule there.
        extra = _COMMON if scope["path"].startswith(DOCS_PATHS) else _COMMON + _PAGES

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.extend(extra)
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


def _has_body(scope: Scope) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


class BodyTooLarge(HTTPException):
    """Raised while a body is read past the limit (FastAPI passes HTTPExceptions through its
    body parsing, so the problem handler answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes``: at once when Content-Length says so, else while
    the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS and not _has_body(scope):
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status = 413 if length.isdigit() else 400
            detail = BodyTooLarge(self.max_bytes).detail if status == 413 else "bad Content-Length"
            await problem_response(status, detail, instance=scope["path"])(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except BodyTooLarge as exc:  # read by a middleware, outside the routes' handlers
            if started:
                raise
            await problem_response(413, exc.detail, instance=scope["path"])(scope, receive, send)


async def read_body(receive: Receive) -> bytes:
    """The whole request body (a middleware that needs it passes it on with replay_body)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body, then waits on the real one (for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# A NUL in a JSON string is written \u0000; \\u0000 (an escaped backslash, then u0000) is text.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
NUL_DETAIL = "text must not contain NUL (\\u0000) characters"


class NulGuardMiddleware:
    """Refuse a request with a NUL character in its path, query or JSON body (422): Postgres
    cannot store one in text, so it would fail deep inside a command as an internal error, or
    travel on to a service in a message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            await problem_response(422, NUL_DETAIL, instance=scope["path"])(scope, receive, send)
            return
        if scope["method"] in _BODILESS and not _has_body(scope):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if _JSON_NUL.search(body):
            await problem_response(422, NUL_DETAIL, instance=scope["path"])(scope, receive, send)
            return
        await self.app(scope, replay_body(body, receive), send)
