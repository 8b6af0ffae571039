"""The strategy service: stream events in, the pure engine's decisions out as intents.

Deterministic: the same events give the same intents (ids included). A decision and the state
that produced it are committed together (intents staged in the outbox), so a crash can neither
send an intent without remembering it nor remember one without sending it. Ticks that change
nothing durable (a new high without a stop step) are kept in memory and flushed every few
seconds; after a crash the highest price may restart slightly lower — the stop never moves down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from services.strategy import persistence
from shared.bus.publisher import stage
from shared.config import StrategySettings
from shared.contracts import streams
from shared.contracts.messages import (
    Candle,
    Envelope,
    ExitLeg,
    ExitReason,
    ExitRequested,
    Flatten,
    GttPlaced,
    LegClosed,
    ModifyGtt,
    OrderFilled,
    OrderRejected,
    ParamsChanged,
    Payload,
    PlaceGtt,
    PlaceOrder,
    Side,
    StrategyStart,
    StrategyStop,
    Ticks,
)
from shared.domain.candles import Bar
from shared.domain.engine import MomentumEngine, intent_id
from shared.domain.ladder import (
    Decision,
    EnterLeg,
    Ladder,
    LegState,
    ProtectLeg,
    RaiseStop,
    StrategyParams,
)

log = logging.getLogger("ratchet.strategy")
SOURCE = "strategy"


@dataclass
class Awaiting:
    """An intent sent and not yet answered: re-sent with the same id after a timeout."""

    payload: Payload
    sent_at: float


InstrumentLoader = Callable[[str], tuple[str, int, list[Bar]] | None]
"""symbol -> (exchange, tick in paise, stored bars oldest first), or None if unknown."""


@dataclass
class StrategyService:
    engine: MomentumEngine
    sessions: sessionmaker[Session]
    settings: StrategySettings
    loader: InstrumentLoader
    owns: Callable[[str], bool] = lambda _symbol: True  # noqa: E731 - one replica owns all
    origin: str = SOURCE  # this replica's name in the envelopes it sends
    resend_after_s: float = 15.0
    enabled: bool = True
    lock: threading.RLock = field(default_factory=threading.RLock)
    awaiting: dict[str, Awaiting] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    _intents: list[Payload] = field(default_factory=list)
    _ladders: dict[str, Ladder] = field(default_factory=dict)
    _symbols: set[str] = field(default_factory=set)
    last_bar: dict[str, int] = field(default_factory=dict)
    # the latest price by symbol (a tick's, else the last stored close): a manual exit's
    # reference, what a market sale is expected to get (the paper broker fills at it)
    last_price: dict[str, int] = field(default_factory=dict)
    intents_sent: int = 0
    engine_symbols: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.engine.params.strategy_name

    # --- start-up ------------------------------------------------------------------------------

    def _load(self, symbol: str, state: dict | None, before_ms: int | None) -> bool:
        """Add one symbol: EMAs from stored bars up to the last bar it had processed (or before
        ``before_ms``, the bar in hand), then its ladder. Stored bars it has not processed yet (it
        was down, or another replica had the symbol) are played now, signals included, so a
        restart or a takeover loses no bar; the stream's copies of them are then ignored."""
        found = self.loader(symbol)
        if found is None:
            return False
        exchange, tick, bars = found
        self.engine.add_instrument(symbol, exchange, tick)
        last = state.get("last_bar_ms") if state else None
        bars = [b for b in bars if before_ms is None or b.start_ms < before_ms]
        if bars:
            self.last_price.setdefault(symbol, bars[-1].close)
        warm = [b for b in bars if last is None or b.start_ms <= last]
        self.engine.warm_bars(symbol, warm)
        if warm:
            self.last_bar[symbol] = warm[-1].start_ms
        if state and state.get("ladder"):
            ladder = Ladder.from_dict(state["ladder"])
            self.engine.restore_ladder(ladder)
            self._await_pending(ladder)
        for bar in bars[len(warm):]:
            self.record(symbol, self._unless_stopped(self.engine.on_bar(symbol, bar)))
            self.last_bar[symbol] = bar.start_ms
        return True

    def adopt(self, symbols: list[str]) -> list[str]:
        """Take symbols over (a shard moved here): rebuild them from what was committed.
        Returns the ladder ids now followed, whose events the caller replays."""
        with self.lock:
            with self.sessions() as session:
                states = persistence.load_states(session, self.name)
            for symbol in symbols:
                self.engine_symbols.discard(symbol)
                if self._load(symbol, states.get(symbol), before_ms=None):
                    self.engine_symbols.add(symbol)
            self.flush()
            log.info("symbols adopted", extra={"symbols": len(symbols),
                                               "ladders": len(self.engine.ladders())})
            return [lad.ladder_id for lad in self.engine.ladders() if lad.symbol in set(symbols)]

    def forget(self, symbols: list[str]) -> None:
        """Hand symbols over (their shard moved away): persist, then drop them."""
        with self.lock:
            for symbol in symbols:
                if symbol in self.engine_symbols:
                    self.record(symbol, [])
            self.flush()
            for symbol in symbols:
                self.engine.remove_instrument(symbol)
                self.engine_symbols.discard(symbol)
                self.dirty.discard(symbol)
                self.last_bar.pop(symbol, None)
                self.last_price.pop(symbol, None)
                for intent_id in [k for k, a in self.awaiting.items()
                                  if getattr(a.payload, "symbol", "") == symbol]:
                    self.awaiting.pop(intent_id, None)

    def known(self, symbol: str, before_ms: int | None = None) -> bool:
        """True once the symbol is in the engine, loading it on first sight."""
        if symbol in self.engine_symbols:
            return True
        with self.sessions() as session:
            state = persistence.load_states(session, self.name, symbol).get(symbol)
        if self._load(symbol, state, before_ms):
            self.engine_symbols.add(symbol)
            return True
        return False

    def _await_pending(self, ladder: Ladder) -> None:
        """Unanswered entries of a restored ladder are re-sent (same ids) after the timeout."""
        for leg in ladder.legs.values():
            if leg.state is LegState.PENDING:
                decision = EnterLeg(ladder.ladder_id, ladder.symbol, ladder.exchange, leg.leg,
                                    leg.qty, leg.ref_price, leg.signal_ms,
                                    intent_id(self.name, ladder.exchange, ladder.symbol,
                                              ladder.key, leg.leg, "buy"))
                intent = self._intent(decision)
                assert intent is not None  # an EnterLeg always makes a PlaceOrder
                self.awaiting[decision.intent_id] = Awaiting(intent, time.monotonic())

    # --- stream handlers -------------------------------------------------------------------------

    def handle(self, _stream: str, _entry_id: str, envelope: Envelope) -> None:
        payload = envelope.payload
        with self.lock:
            if isinstance(payload, Ticks):
                self.on_ticks(payload)
            elif isinstance(payload, Candle):
                if self.owns(payload.symbol):
                    self.on_candle(payload)
            elif isinstance(payload, OrderFilled | OrderRejected | LegClosed | GttPlaced):
                if self.owns(payload.symbol):
                    self.on_exec_event(payload)
            elif isinstance(payload, ExitRequested | Flatten | StrategyStart | StrategyStop
                            | ParamsChanged):
                self.on_control(payload, envelope.ts)

    def on_ticks(self, payload: Ticks) -> None:
        """Ticks of a symbol this replica does not own are dropped: a batch read before its shard
        moved away must not load the symbol back (and trail, and save, over the new owner's)."""
        engine = self.engine
        for tick in payload.ticks:
            if tick.symbol not in self.engine_symbols \
                    and not (self.owns(tick.symbol) and self.known(tick.symbol)):
                continue
            self.last_price[tick.symbol] = tick.price
            decisions = self._unless_stopped(engine.on_tick(tick.symbol, tick.ts_ms, tick.price))
            ladder = engine.active_ladder(tick.symbol)
            if decisions:
                self.record(tick.symbol, decisions)
            elif ladder is not None and ladder.open_legs():
                self.dirty.add(tick.symbol)

    def on_candle(self, candle: Candle) -> None:
        if not self.known(candle.symbol, before_ms=candle.start_ms):
            log.warning("candle of an unknown instrument", extra={"symbol": candle.symbol})
            return
        bar = Bar(candle.start_ms, candle.end_ms, candle.open, candle.high, candle.low,
                  candle.close, candle.volume)
        decisions = self._unless_stopped(self.engine.on_bar(candle.symbol, bar))
        self.last_bar[candle.symbol] = max(candle.start_ms, self.last_bar.get(candle.symbol, 0))
        self.record(candle.symbol, decisions)

    def _unless_stopped(self, decisions: list[Decision]) -> list[Decision]:
        """Strategy stopped ("stop new entries"): an entry just decided — a P1 from a signal, a
        P2/P3 from a rise, on a live bar or one played at catch-up — is not sent, and the engine
        takes it as refused (a P1's ladder is dropped; a P2/P3 is spent). Open legs keep their
        stops and exits. Only the entries decided here: a P1 already sent stays, its fill due."""
        if self.enabled:
            return decisions
        kept: list[Decision] = []
        for decision in decisions:
            if isinstance(decision, EnterLeg):
                kept.extend(self.engine.on_entry_rejected(decision.ladder_id, decision.leg,
                                                          decision.ts_ms))
            else:
                kept.append(decision)
        return kept

    def on_exec_event(self, event: OrderFilled | OrderRejected | LegClosed | GttPlaced) -> None:
        engine = self.engine
        decisions: list[Decision] = []
        ladder = engine.ladder(event.ladder_id)
        if isinstance(event, OrderFilled) and event.side == Side.BUY:
            self.awaiting.pop(event.intent_id, None)
            decisions = engine.on_entry_filled(event.ladder_id, event.leg, event.price, event.qty,
                                               event.ts_ms)
        elif isinstance(event, OrderRejected):
            self.awaiting.pop(event.intent_id, None)
            decisions = engine.on_entry_rejected(event.ladder_id, event.leg, event.ts_ms)
        elif isinstance(event, LegClosed):
            decisions = engine.on_leg_closed(event.ladder_id, event.leg, event.exit_price,
                                             event.ts_ms, event.reason.value)
        elif isinstance(event, GttPlaced):
            self.awaiting.pop(event.intent_id, None)
            with self.sessions.begin() as session:
                persistence.set_gtt_id(session, event.ladder_id, event.leg, event.trigger_id)
            return
        if ladder is not None:
            self.record(ladder.symbol, decisions, ladder=ladder)

    def on_control(self, payload: Payload, ts_ms: int) -> None:
        """``ts_ms`` is the control message's time: an exit it asks for is decided then (the
        engine has no clock), and execution books the leg's close on that day."""
        if isinstance(payload, StrategyStop):
            self.enabled = False
        elif isinstance(payload, StrategyStart):
            self.enabled = True
        elif isinstance(payload, ParamsChanged) and payload.section == "strategy":
            self.apply_params(payload)
        elif isinstance(payload, Flatten):
            for lad in self.engine.ladders():
                self._exit_ladder(lad, ExitReason.FLATTEN, ts_ms)
        elif isinstance(payload, ExitRequested):
            ladder = self.engine.ladder(payload.ladder_id)
            if ladder is not None:
                self._exit_ladder(ladder, ExitReason.MANUAL, ts_ms, only_leg=payload.leg)

    def apply_params(self, change: ParamsChanged) -> None:
        """New settings at run time: new legs use them; open legs keep their stop %. A change
        the engine cannot take while running (the EMA periods) is refused and logged."""
        values: dict[str, object] = dict(change.values)
        if isinstance(values.get("ema_periods"), str):
            values["ema_periods"] = tuple(int(p) for p in str(values["ema_periods"]).split(","))
        try:
            merged = StrategySettings(**{**self.settings.model_dump(), **values})
            self.engine.set_params(StrategyParams.from_settings(merged))
        except (ValidationError, ValueError) as exc:
            log.error("strategy settings refused", extra={"by": change.by, "values": change.values,
                                                           "error": str(exc)})
            return
        self.settings = merged
        log.info("strategy settings applied", extra={"by": change.by, "values": change.values})

    def _exit_ladder(
        self, ladder: Ladder, reason: ExitReason, ts_ms: int, only_leg: int | None = None
    ) -> None:
        """ExitLeg intents stamped with the decision's time ``ts_ms``, not the leg's entry: a
        CNC leg bought yesterday and sold today at a loss is today's loss for the guards."""
        intents: list[Payload] = []
        for leg in ladder.open_legs():
            if only_leg is not None and leg.leg != only_leg:
                continue
            intents.append(ExitLeg(
                intent_id=intent_id(self.name, ladder.exchange, ladder.symbol, ladder.key,
                                    leg.leg, "exit"),
                strategy=self.name, exchange=ladder.exchange, symbol=ladder.symbol,
                ladder_id=ladder.ladder_id, leg=leg.leg, ts_ms=ts_ms, qty=leg.qty,
                ref_price=self.last_price.get(ladder.symbol, leg.highest), reason=reason,
            ))
        self._intents.extend(intents)

    # --- decisions -> intents ------------------------------------------------------------------

    def record(
        self, symbol: str, decisions: Sequence[Decision], *, ladder: Ladder | None = None
    ) -> None:
        """Note what changed; :meth:`flush` makes it durable before the entries are acked.
        ``ladder`` names a ladder the decisions may have ended (gone from the engine)."""
        for decision in decisions:
            intent = self._intent(decision)
            if intent is not None:
                self._intents.append(intent)
                if isinstance(intent, PlaceOrder | PlaceGtt):
                    self.awaiting[intent.intent_id] = Awaiting(intent, time.monotonic())
        touched = ladder or self.engine.active_ladder(symbol)
        if touched is not None:
            self._ladders[touched.ladder_id] = touched
        self._symbols.add(symbol)
        self.dirty.discard(symbol)

    def flush(self) -> None:
        """Persist the batch's intents (outbox), ladders, trades and resume state in one
        transaction. Called before the batch is acked; if it fails the process stops, and a
        restart rebuilds the engine from what was committed and reads the entries again."""
        with self.lock:
            if not self._symbols and not self._intents:
                return
            with self.sessions.begin() as session:
                for intent in self._intents:
                    self._stage(session, intent)
                persistence.save_ladders(
                    session, self.name, [(lad, _phase(lad)) for lad in self._ladders.values()]
                )
                persistence.save_symbols(session, self.name, [
                    (sym, self.last_bar.get(sym), self.engine.active_ladder(sym))
                    for sym in self._symbols
                ])
            self.intents_sent += len(self._intents)
            self._intents.clear()
            self._ladders.clear()
            self._symbols.clear()

    def _intent(self, d: Decision) -> Payload | None:
        if not isinstance(d, EnterLeg | ProtectLeg | RaiseStop):
            return None  # LadderEnded: informational
        common = {"intent_id": d.intent_id, "strategy": self.name, "exchange": d.exchange,
                  "symbol": d.symbol, "ladder_id": d.ladder_id, "ts_ms": d.ts_ms}
        if isinstance(d, EnterLeg):
            return PlaceOrder(**common, leg=d.leg, qty=d.qty, ref_price=d.ref_price)
        if isinstance(d, ProtectLeg):
            return PlaceGtt(**common, leg=d.leg, qty=d.qty, trigger=d.trigger, target=d.target,
                            last_price=d.last_price)
        return ModifyGtt(**common, leg=d.leg, qty=d.qty, trigger=d.trigger, target=d.target,
                         last_price=d.last_price)

    def _stage(self, session: Session, intent: Payload) -> None:
        intent_id = intent.intent_id  # type: ignore[attr-defined]
        stage(session, streams.INTENTS, intent, msg_id=intent_id, ts_ms=intent.ts_ms,  # type: ignore[attr-defined]
              source=SOURCE, origin=self.origin)
        log.info("intent", extra={"intent_id": intent_id, "type": intent.TYPE})

    # --- periodic --------------------------------------------------------------------------------

    def flush_dirty(self) -> None:
        """Persist trailing highs that changed nothing else (every few seconds)."""
        with self.lock:
            for symbol in list(self.dirty):
                self.record(symbol, [])
        self.flush()

    def resend_unanswered(self) -> None:
        """Producers re-send: an intent without an answer after the timeout goes again."""
        now = time.monotonic()
        with self.lock:
            due = [a for a in self.awaiting.values() if now - a.sent_at >= self.resend_after_s]
            if not due:
                return
            with self.sessions.begin() as session:
                for item in due:
                    self._stage(session, item.payload)
                    item.sent_at = now
        log.info("re-sent unanswered intents", extra={"count": len(due)})


def _phase(ladder: Ladder) -> str:
    states = [leg.state for leg in ladder.legs.values()]
    if ladder.active:
        return "ACTIVE" if any(s is not LegState.PENDING for s in states) else "PENDING"
    if all(s is LegState.REJECTED for s in states):
        return "CANCELLED"
    return "ENDED"
