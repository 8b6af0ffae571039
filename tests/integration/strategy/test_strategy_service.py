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
