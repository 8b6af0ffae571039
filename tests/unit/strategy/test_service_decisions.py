"""The strategy service's own rules around the engine, without Redis or Postgres: what a stopped
strategy sends (no new entry, from any path; a P1 already sent keeps its fill and its stop), and
the price a manual exit is referenced at."""

from __future__ import annotations

from services.strategy.service import StrategyService
from shared.config import StrategySettings
from shared.contracts.messages import (
    Candle,
    Flatten,
    OrderFilled,
    PlaceGtt,
    PlaceOrder,
    Side,
    StrategyStop,
    Tick,
    Ticks,
)
from shared.domain.candles import Bar
from shared.domain.engine import MomentumEngine
from shared.domain.ladder import LegState, StrategyParams
from shared.domain.session import SessionRules

BAR_MS = 900_000
# Short EMAs: flat, a dip, then a jump above them all is a signal on the last bar.
CLOSES = [10_000] * 6 + [9_000, 9_000, 9_100, 10_500]


def engine() -> MomentumEngine:
    return MomentumEngine(StrategyParams(ema_periods=(2, 3, 4, 5)), SessionRules(enabled=False))


def service(bars: list[Bar] | None = None) -> StrategyService:
    """A service whose database is never reached on these paths (sessions unused)."""
    loader = (lambda _symbol: ("NSE", 5, bars)) if bars is not None else (lambda _symbol: None)
    svc = StrategyService(engine(), sessions=None, settings=StrategySettings(),  # type: ignore[arg-type]
                          loader=loader)
    if bars is None:
        svc.engine.add_instrument("X", "NSE", 5)
        svc.engine_symbols.add("X")
    return svc


def candle(i: int, close: int) -> Candle:
    return Candle(token=1, symbol="X", timeframe_minutes=15, start_ms=i * BAR_MS,
                  end_ms=(i + 1) * BAR_MS, open=close, high=close, low=close, close=close,
                  volume=1, ema=(None, None, None, None))


def tick(ts_ms: int, price: int) -> Ticks:
    return Ticks(ticks=[Tick(token=1, symbol="X", exchange="NSE", ts_ms=ts_ms, price=price,
                             volume=None)])


def to_signal(svc: StrategyService) -> int:
    """Play the closes until P1 is decided; the bar index it came on."""
    for i, close in enumerate(CLOSES):
        svc.on_candle(candle(i, close))
        if svc.engine.active_ladder("X") is not None:
            return i
    raise AssertionError("the closes gave no signal")


def sent(svc: StrategyService, kind: type) -> list:
    return [p for p in svc._intents if isinstance(p, kind)]


def fill_p1(svc: StrategyService, ts_ms: int, price: int = 10_500) -> None:
    ladder = svc.engine.active_ladder("X")
    assert ladder is not None
    svc.on_exec_event(OrderFilled(intent_id="p1", exchange="NSE",
                                  symbol="X", ladder_id=ladder.ladder_id, leg=1, ts_ms=ts_ms,
                                  order_id="1", side=Side.BUY, qty=ladder.legs[1].qty,
                                  price=price))


def test_a_p1_sent_before_a_stop_keeps_its_fill_and_gets_its_stop() -> None:
    """Stopping drops only the entries decided while stopped: a P1 already at the broker fills,
    and its leg must get its GTT (it used to be dropped by the next bar: a leg with no stop)."""
    svc = service()
    i = to_signal(svc)
    assert len(sent(svc, PlaceOrder)) == 1
    svc.on_control(StrategyStop(by="t"), (i + 1) * BAR_MS)
    svc.on_candle(candle(i + 1, 10_600))  # a bar closes before the fill comes back
    fill_p1(svc, (i + 2) * BAR_MS)
    assert [g.leg for g in sent(svc, PlaceGtt)] == [1]


def test_a_stopped_strategy_opens_no_ladder_on_a_signal() -> None:
    svc = service()
    svc.on_control(StrategyStop(by="t"), 0)
    for i, close in enumerate(CLOSES):
        svc.on_candle(candle(i, close))
    assert sent(svc, PlaceOrder) == [] and svc.engine.active_ladder("X") is None


def test_a_stopped_strategy_sends_no_entry_from_bars_played_at_catch_up() -> None:
    bars = [Bar(i * BAR_MS, (i + 1) * BAR_MS, c, c, c, c, 1) for i, c in enumerate(CLOSES)]
    svc = service(bars)
    svc.enabled = False
    # it had processed the first six bars: the dip and the jump are played at load
    assert svc._load("X", {"last_bar_ms": bars[5].start_ms, "ladder": None}, None)
    assert sent(svc, PlaceOrder) == [] and svc.engine.active_ladder("X") is None


def test_a_stopped_strategy_adds_no_p2_to_an_open_ladder() -> None:
    svc = service()
    i = to_signal(svc)
    fill_p1(svc, (i + 1) * BAR_MS)
    svc.on_control(StrategyStop(by="t"), (i + 1) * BAR_MS)
    svc._intents.clear()
    svc.on_ticks(tick((i + 2) * BAR_MS, 11_000))  # far past P2's trigger
    assert sent(svc, PlaceOrder) == []
    ladder = svc.engine.active_ladder("X")
    assert ladder is not None and ladder.legs[1].state is LegState.OPEN
    assert 2 not in ladder.legs or ladder.legs[2].state is not LegState.PENDING


def test_a_manual_exit_is_referenced_at_the_last_price_not_the_leg_high() -> None:
    svc = service()
    i = to_signal(svc)
    fill_p1(svc, (i + 1) * BAR_MS)
    svc.on_control(StrategyStop(by="t"), (i + 1) * BAR_MS)  # no P2 in the way
    svc.on_ticks(tick((i + 2) * BAR_MS, 11_000))
    svc.on_ticks(tick((i + 2) * BAR_MS + 1_000, 10_300))
    svc._intents.clear()
    svc.on_control(Flatten(by="t"), (i + 3) * BAR_MS)
    [exit_leg] = [p for p in svc._intents if p.TYPE == "ExitLeg"]
    assert exit_leg.ref_price == 10_300
