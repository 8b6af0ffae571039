"""WebSocket ``/api/v1/ws``: the live feed (see :mod:`services.api.live` for the channels).

Authentication, before the handshake is accepted: an API key in the ``X-API-Key`` header; or,
for clients that cannot set headers (browsers), offered as the subprotocols ``ratchet`` and
``ratchet.key.<API key>`` (the server then accepts ``ratchet``), which keeps the key out of URLs
and so out of proxies' logs; or the ``key`` query parameter (kept for older clients; redacted in
Ratchet's own logs); else the session cookie of a logged-in user. A cookie-authenticated
handshake from another origin is refused (a WebSocket is not covered by CORS). A refused
handshake is an HTTP problem response (401, 403, 429, 503).

Protocol (JSON text frames). The client sends::

    {"action": "subscribe", "channels": ["ticks", "legs"], "symbols": ["INFY"],
     "resume_from": "1712345678901-0"}      # symbols and resume_from are optional
    {"action": "unsubscribe"}
    {"action": "ping"}

A subscribe replaces the previous one; no symbols (or an empty list) means all symbols.
``resume_from`` is the ``id`` of the last ``exec.events`` message the client saw: the events
after it are sent first, then live ones, with no gap and no repeat. The server sends
``{"channel": C, "data": {...}}``; its own notes use the channel ``system`` (``hello``,
``subscribed``, ``replayed``, ``resync``, ``pong``, ``error``). A client that falls more than
the queue limit behind is closed with code 1008 and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect

from ..context import ApiContext, Caller
from ..deps import API_KEY_HEADER, _key_caller, _limit, _refuse
from ..hub import Hub, Subscriber, system
from ..live import CHANNELS, parse_entry_id, symbol_key
from ..problems import ApiProblem, problem_response
from ..security import SESSION_COOKIE, load_session

router = APIRouter(tags=["live"])
log = logging.getLogger("ratchet.api.ws")

MAX_FRAME_BYTES = 16 * 1024
MAX_SYMBOLS = 500
CLOSE_TIMEOUT_S = 5.0
RECHECK_S = 30.0


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser
    return urlsplit(origin).netloc.lower() == websocket.headers.get("host", "").lower()


SUBPROTOCOL = "ratchet"
_KEY_PROTOCOL = SUBPROTOCOL + ".key."


def _offered(websocket: WebSocket) -> list[str]:
    return [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]


def _protocol_key(websocket: WebSocket) -> str | None:
    """An API key offered as the subprotocol ``ratchet.key.<key>`` (a browser's only header)."""
    for offered in _offered(websocket):
        if offered.startswith(_KEY_PROTOCOL):
            return offered.removeprefix(_KEY_PROTOCOL)
    return None


async def authenticate(websocket: WebSocket, ctx: ApiContext) -> Caller:
    """The caller of a handshake, or an :class:`ApiProblem` to refuse it with."""
    api_key = (websocket.headers.get(API_KEY_HEADER) or _protocol_key(websocket)
               or websocket.query_params.get("key"))
    token = websocket.cookies.get(SESSION_COOKIE)
    caller: Caller | None
    if api_key:
        caller = await _key_caller(ctx, api_key)
        if caller is None:
            raise await _refuse(websocket, ctx, "invalid, expired or revoked API key")
    elif token:
        try:
            caller = await load_session(ctx.fast.redis, token)
        except RedisError as exc:
            raise ApiProblem(503, "session store unavailable; use an API key") from exc
        if caller is None:
            raise await _refuse(
                websocket, ctx, "the session has expired or was ended; log in again"
            )
        if not _same_origin(websocket):
            raise ApiProblem(403, "a cookie-authenticated WebSocket must come from this origin")
    else:
        raise await _refuse(
            websocket, ctx,
            "missing credentials: send an API key (X-API-Key header, or the subprotocol "
            "ratchet.key.<key>) or log in",
        )
    await _limit(websocket, ctx, caller.scope)
    return caller


async def _deny(websocket: WebSocket, problem: ApiProblem) -> None:
    response = problem_response(problem.status, problem.detail, instance=websocket.url.path,
                                headers=problem.headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # a server without the denial extension: a plain 403
        await websocket.close(code=1008, reason=(problem.detail or "")[:120])


def _error(sub: Subscriber, detail: str) -> None:
    sub.offer(system("error", detail=detail))


def _symbols(raw: Any) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ValueError("symbols must be a list of strings")
    if len(raw) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols")
    chosen = frozenset(symbol_key(s) for s in raw if symbol_key(s))
    return chosen or None


def _channels(raw: Any) -> list[str]:
    if raw is None:
        return list(CHANNELS)
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise ValueError("channels must be a list of strings")
    unknown = sorted(set(raw) - set(CHANNELS))
    if unknown:
        raise ValueError(f"unknown channels {unknown}; known: {list(CHANNELS)}")
    return raw


async def _handle(hub: Hub, sub: Subscriber, text: str) -> None:
    if len(text) > MAX_FRAME_BYTES:
        _error(sub, f"a client message may have at most {MAX_FRAME_BYTES} bytes")
        return
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        _error(sub, "not JSON")
        return
    action = doc.get("action") if isinstance(doc, dict) else None
    if action == "ping":
        sub.offer(system("pong"))
    elif action == "unsubscribe":
        hub.subscribe(sub, (), None)
        sub.offer(system("subscribed", channels=[], symbols=None))
    elif action == "subscribe":
        try:
            channels, symbols = _channels(doc.get("channels")), _symbols(doc.get("symbols"))
            resume = doc.get("resume_from")
            after = parse_entry_id(resume) if resume is not None else None
        except (ValueError, AttributeError) as exc:
            _error(sub, str(exc))
            return
        sub.offer(system("subscribed", channels=sorted(set(channels)),
                         symbols=sorted(symbols) if symbols else None))
        if after is None:
            hub.subscribe(sub, channels, symbols)
        else:
            hub.subscribe_from(sub, channels, symbols, after)
            await hub.replay(sub, resume)
    else:
        _error(sub, "unknown action; send subscribe, unsubscribe or ping")


async def _read(websocket: WebSocket, hub: Hub, sub: Subscriber) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None and message.get("bytes") is not None:
            text = message["bytes"].decode("utf-8", "replace")
        if text is not None:
            await _handle(hub, sub, text)


async def _recheck(websocket: WebSocket, ctx: ApiContext, sub: Subscriber) -> None:
    """End the connection when its credential stops being valid (a key revoked or expired, a
    session ended by logout or by disabling the user), within ``RECHECK_S``."""
    while True:
        await asyncio.sleep(RECHECK_S)
        try:
            caller = await authenticate(websocket, ctx)
        except ApiProblem as problem:
            if problem.status in (401, 403):
                sub.drop("the credential is no longer valid; sign in again")
                return
            continue  # a store away, or the rate limit: keep the connection
        if caller.role != sub.caller.role:
            sub.drop("the role changed; connect again")
            return


async def _write(websocket: WebSocket, sub: Subscriber) -> None:
    send = websocket.send
    while True:
        await sub.ready.wait()
        sub.ready.clear()
        queue = sub.queue
        while queue and sub.dropped is None:
            item = queue.popleft()
            if item.event_id is not None:
                if item.event_id <= sub.last_event:
                    continue
                sub.last_event = item.event_id
            await send({"type": "websocket.send", "text": item.text})
        if sub.dropped is not None:
            return


@router.websocket("/ws", name="live feed")
async def live_feed(websocket: WebSocket) -> None:
    ctx: ApiContext = websocket.app.state.ctx
    hub: Hub = websocket.app.state.hub
    try:
        caller = await authenticate(websocket, ctx)
        if hub.full():
            raise ApiProblem(503, "too many live clients on this server; try again later",
                             headers={"Retry-After": "5"})
    except ApiProblem as problem:
        await _deny(websocket, problem)
        return
    # a browser drops a connection whose server picks none of the subprotocols it offered
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in _offered(websocket) else None)
    sub = hub.add(caller)
    sub.offer(system("hello", user=caller.name, role=caller.role.value, channels=list(CHANNELS),
                     queue_limit=sub.limit))
    tasks = [asyncio.create_task(_read(websocket, hub, sub)),
             asyncio.create_task(_write(websocket, sub)),
             asyncio.create_task(_recheck(websocket, ctx, sub))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.remove(sub)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
    if sub.dropped is not None:
        log.info("closing a websocket client",
                 extra={"caller": caller.actor, "reason": sub.dropped})
        # The close frame goes out after whatever the socket still buffers; a client that reads
        # nothing at all is left to the transport (and to the ping timeout).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                websocket.close(code=sub.close_code, reason=sub.dropped[:120]), CLOSE_TIMEOUT_S
            )
