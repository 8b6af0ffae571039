"""How a mutating endpoint changes things: its effect, an audit row and the control message it
announces are written in one Postgres transaction (the message into the outbox), then the outbox
is published to the ``control`` stream. A crash after the commit delays the message (the relay
loop sends it), never loses it; consumers dedupe by message id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from shared.bus.publisher import now_ms, stage
from shared.contracts.messages import Payload
from shared.contracts.streams import CONTROL
from shared.store.models import AuditEntry

from .context import ApiContext, Caller

log = logging.getLogger("ratchet.api")

SOURCE = "api"


class Command:
    """One mutating call's transaction: add the effect to ``session``, then ``audit`` and,
    when the others must hear of it, ``announce``."""

    def __init__(self, session: Session, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.announced = False

    def audit(
        self,
        action: str,
        object_type: str,
        object_id: str | None = None,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        self.session.add(
            AuditEntry(
                actor=self.caller.actor,
                action=action,
                object_type=object_type,
                object_id=object_id,
                before=before,
                after=after,
            )
        )

    def announce(self, payload: Payload) -> str:
        msg_id = f"{SOURCE}:{payload.TYPE}:{uuid.uuid4().hex}"
        stage(self.session, CONTROL, payload, msg_id=msg_id, ts_ms=now_ms(), source=SOURCE)
        self.announced = True
        return msg_id


@contextmanager
def command(ctx: ApiContext, caller: Caller) -> Iterator[Command]:
    """A transaction for one mutating call; on success, publishes what it announced."""
    with ctx.sessions.begin() as session:
        cmd = Command(session, caller)
        yield cmd
    if cmd.announced:
        flush_outbox(ctx)


def flush_outbox(ctx: ApiContext) -> int:
    """Publish the api's committed, unpublished control messages (safe to call any time)."""
    try:
        return ctx.relay.flush()
    except Exception:  # noqa: BLE001 - the relay loop retries; the effect is already committed
        log.exception("publishing the api outbox failed; the relay loop will retry")
        return 0

