"""The periodic sweep (DESIGN.md §3): every open leg re-checked against the LTP store.

It makes no trading decision — the broker's GTT does that — it raises an alert for anything that
looks missed: a leg with no GTT confirmed, or a price at or through a stop that has not fired.
A condition must hold on two sweeps in a row, so a stop that is firing right now is not reported.
"""

from __future__ import annotations

import logging

import orjson
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.strategy.service import StrategyService
from shared.contracts import streams
from shared.contracts.messages import AlertLevel
from shared.store.models import AlertRecord, Trade

log = logging.getLogger("ratchet.strategy")


class Sweep:
    def __init__(
        self, service: StrategyService, client: redis.Redis, sessions: sessionmaker[Session]
    ) -> None:
        self.service = service
        self.client = client
        self.sessions = sessions
        self._suspect: set[str] = set()
        self._reported: set[str] = set()

    def run_once(self) -> int:
        """Check every open leg; return the number of new alerts."""
        with self.service.lock:
            legs = [(ladder, leg) for ladder in self.service.engine.ladders()
                    for leg in ladder.open_legs()]
        if not legs:
            self._suspect.clear()
            return 0
        fields = [f"{ladder.exchange}:{ladder.symbol}" for ladder, _ in legs]
        prices = self.client.hmget(streams.LTP_HASH, fields)
        with self.sessions() as session:
            ids = [f"{ladder.ladder_id}:{leg.leg}" for ladder, leg in legs]
            with_gtt = set(session.scalars(
                select(Trade.trade_id).where(Trade.trade_id.in_(ids), Trade.gtt_id.is_not(None))))
        suspect: set[str] = set()
        found: list[AlertRecord] = []
        for (ladder, leg), raw in zip(legs, prices, strict=True):
            trade_id = f"{ladder.ladder_id}:{leg.leg}"
            problems = []
            if trade_id not in with_gtt:
                problems.append(("gtt_missing", AlertLevel.CRITICAL,
                                 f"{ladder.symbol} leg {leg.leg} is open without a confirmed GTT"))
            if raw is not None:
                price = int(orjson.loads(raw)["price"])
                if price <= leg.stop:
                    problems.append(("stop_not_triggered", AlertLevel.CRITICAL,
                                     f"{ladder.symbol} leg {leg.leg}: price {price / 100:.2f} is "
                                     f"at or below its stop {leg.stop / 100:.2f} and the leg is "
                                     "still open"))
            for code, level, message in problems:
                key = f"{trade_id}:{code}:{leg.stop}"
                suspect.add(key)
                if key in self._suspect and key not in self._reported:
                    self._reported.add(key)
                    found.append(AlertRecord(level=level, code=code, message=message,
                                             symbol=ladder.symbol, ladder_id=ladder.ladder_id,
                                             source="strategy"))
        self._suspect = suspect
        if found:
            with self.sessions.begin() as session:
                session.add_all(found)
            for alert in found:
                log.warning(alert.message, extra={"code": alert.code, "ladder_id": alert.ladder_id})
        return len(found)
