"""The strategy service on real Postgres: a fill becomes one protective GTT intent even when the
event is delivered twice, and a restarted service resumes its ladders exactly."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.strategy.service import StrategyService
from shared.config import StrategySettings
from shared.contracts.messages import OrderFilled, PlaceGtt, Side, Tick, Ticks, decode
from shared.domain.engine import MomentumEngine
from shared.domain.ladder import Ladder, Leg, StrategyParams
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.models import OutboxMessage, Trade

T0 = ms_from_ist(datetime(2026, 11, 24, 10, 0))
LADDER = "NSE:INFY:202611240945"
FILL = OrderFilled(intent_id=f"momentum:{LADDER}:1:buy", exchange="NSE", symbol="INFY",
                   ladder_id=LADDER, leg=1, ts_ms=T0, order_id="P1", side=Side.BUY, qty=2,
                   price=150_000)  # the entry of leg 1 of the ladder restore_pending_leg gives


def service(sessions: sessionmaker[Session]) -> StrategyService:
    engine = MomentumEngine(StrategyParams(), SessionRules())
    svc = StrategyService(engine, sessions, StrategySettings(),
                          lambda symbol: ("NSE", 5, []) if symbol == "INFY" else None)
    svc.adopt(["INFY"])
    return svc


def restore_pending_leg(svc: StrategyService) -> None:
    """A ladder whose first leg was sent and awaits its fill."""
    ladder = Ladder(LADDER, "INFY", "NSE", T0 - 900_000, "202611240945")
    ladder.legs[1] = Leg(1, 2, 150_000, svc.engine.params.p1_stop_s, signal_ms=T0)
    svc.engine.restore_ladder(ladder)


def intents(sessions: sessionmaker[Session]) -> list:
    with sessions() as session:
        return [decode(r.data).payload
                for r in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]


def test_fill_twice_gives_one_protective_gtt_and_restart_resumes(sessions) -> None:
    svc = service(sessions)
    restore_pending_leg(svc)
    svc.on_exec_event(FILL)
    svc.on_exec_event(FILL)  # redelivered
    svc.flush()
    gtts = [i for i in intents(sessions) if isinstance(i, PlaceGtt)]
    assert len(gtts) == 1
    assert (gtts[0].trigger, gtts[0].target) == (146_250, 157_500)  # -2.5% down, +5% up, on tick
    svc.on_ticks(Ticks(ticks=[Tick(token=1, symbol="INFY", ts_ms=T0 + 1000, price=152_000)]))
    svc.flush()
    with sessions() as session:
        trade = session.get(Trade, f"{LADDER}:1")
    assert trade.status == "OPEN" and float(trade.stop_loss) > float(trade.initial_stop)

    again = service(sessions)  # a restart
    restored = again.engine.active_ladder("INFY")
    assert restored is not None and restored.to_dict() == svc.engine.active_ladder("INFY").to_dict()


def test_sweep_alerts_on_a_missed_stop_only_when_it_persists(sessions, redis_client) -> None:
    import orjson

    from services.strategy.sweep import Sweep
    from shared.contracts.streams import LTP_HASH
    from shared.store.models import AlertRecord

    svc = service(sessions)
    restore_pending_leg(svc)
    svc.on_exec_event(FILL)
    svc.flush()
    redis_client.hset(LTP_HASH, "NSE:INFY",
                      orjson.dumps({"token": 1, "price": 140_000, "ts_ms": T0}))
    sweep = Sweep(svc, redis_client, sessions)
    assert sweep.run_once() == 0  # first sight: it may be firing right now
    assert sweep.run_once() == 2  # still there: no GTT confirmed, and price below the stop
    assert sweep.run_once() == 0  # reported once
    with sessions() as session:
        codes = sorted(a.code for a in session.scalars(select(AlertRecord)))
    assert codes == ["gtt_missing", "stop_not_triggered"]


def test_settings_change_applies_at_run_time_and_a_bad_one_is_refused(sessions) -> None:
    from shared.contracts.messages import ParamsChanged

    svc = service(sessions)
    svc.apply_params(ParamsChanged(section="strategy", values={"capital_per_position": "6000"},
                                   by="admin"))
    assert svc.engine.params.capital_per_position_paise == 600_000
    svc.apply_params(ParamsChanged(section="strategy", values={"ema_periods": "9,21,50,100"},
                                   by="admin"))
    svc.apply_params(ParamsChanged(section="strategy", values={"p1_stop_pct": "70"}, by="admin"))
    assert svc.engine.params.ema_periods == (9, 21, 50, 200)  # EMA periods cannot change live
    assert svc.engine.params.p1_stop_s == 25_000  # out of (0, 50]: refused
    assert svc.settings.capital_per_position == 6000


def test_ticks_read_before_a_shard_moved_away_do_not_load_its_symbol_back(sessions) -> None:
    svc = service(sessions)
    restore_pending_leg(svc)
    svc.on_exec_event(FILL)
    svc.flush()
    with sessions() as session:
        stop_at_handover = session.get(Trade, f"{LADDER}:1").stop_loss
    svc.owns = lambda symbol: symbol != "INFY"  # its shard moved to another replica
    svc.forget(["INFY"])
    published = len(intents(sessions))

    # the rest of a batch this replica read before the move: a new high that would raise the stop
    svc.on_ticks(Ticks(ticks=[Tick(token=1, symbol="INFY", ts_ms=T0 + 1000, price=160_000)]))
    svc.flush_dirty()

    assert "INFY" not in svc.engine_symbols and svc.engine.active_ladder("INFY") is None
    with sessions() as session:
        assert session.get(Trade, f"{LADDER}:1").stop_loss == stop_at_handover
    assert len(intents(sessions)) == published


def test_an_exit_asked_today_is_booked_today_so_the_daily_loss_guard_sees_it(
    sessions, redis_client, redis_url, database_url
) -> None:
    """A leg bought yesterday and exited today at a loss over the daily limit: the ExitLeg
    carries the control message's time (not the leg's entry), so the loss is today's and
    today's next entry is refused. Stamped with the entry time, the loss went to yesterday."""
    from services.execution.brokers.paper import PaperBroker
    from services.execution.budget import OrderBudget
    from services.execution.faults import FaultPoints
    from services.execution.processor import Execution
    from services.execution.states import OrderState
    from shared.config import Settings
    from shared.contracts.messages import Envelope, ExitLeg, ExitRequested, Flatten, PlaceOrder
    from shared.store.models import HaltRecord, Order

    day = 86_400_000
    execution = Execution(
        sessions, PaperBroker(sessions), OrderBudget(redis_client, 10, 400, 5000),
        Settings(redis_url=redis_url, database_url=database_url), SessionRules(),
        FaultPoints(frozenset(), 0))
    svc = service(sessions)
    restore_pending_leg(svc)
    bought = PlaceOrder(intent_id=FILL.intent_id, strategy="momentum", exchange="NSE",
                        symbol="INFY", ladder_id=LADDER, leg=1, ts_ms=T0 - day, qty=10,
                        ref_price=100_000)
    execution.place_order(bought)  # filled yesterday, at ₹1,000
    svc.on_exec_event(FILL.model_copy(update={"ts_ms": T0 - day, "qty": 10, "price": 100_000}))
    svc.flush()

    def control(payload: ExitRequested | Flatten, ts: int) -> list[ExitLeg]:
        before = len(intents(sessions))
        svc.handle("control", "1-0", Envelope(type=payload.TYPE, v=1, id=f"api:{ts}", ts=ts,
                                              source="api", payload=payload))
        svc.flush()
        return [i for i in intents(sessions)[before:] if isinstance(i, ExitLeg)]

    (flattened,) = control(Flatten(by="admin"), T0 + 1000)
    assert flattened.ts_ms == T0 + 1000
    (exit_leg,) = control(ExitRequested(ladder_id=LADDER, leg=1, by="admin"), T0 + 2000)
    assert exit_leg.ts_ms == T0 + 2000 and exit_leg.intent_id == flattened.intent_id

    execution.exit_leg(exit_leg.model_copy(update={"ref_price": 40_000}))  # ₹6,000 lost
    later = PlaceOrder(intent_id="momentum:NSE:INFY:202611241100:1:buy", strategy="momentum",
                       exchange="NSE", symbol="INFY", ladder_id="NSE:INFY:202611241100", leg=1,
                       ts_ms=T0 + 3000, qty=1, ref_price=100_000)
    execution.place_order(later)
    with sessions() as session:
        refused = session.scalars(select(Order).where(Order.intent_id == later.intent_id)).one()
        halts = [h.kind for h in session.scalars(select(HaltRecord))]
    assert refused.state == OrderState.REJECTED and refused.reason == "guard: halted"
    assert halts == ["daily_loss"]
