"""Asyncio helpers shared by the services' event loops."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``event`` is set, or ``timeout_s`` has passed.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as the event
    is set (CPython gh-86296), so a loop stopped at that moment would never stop, and a server's
    shutdown would wait for it for ever."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
