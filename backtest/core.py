"""The backtester's driver: history through the live domain core, bar by bar (DESIGN §9).

Nothing here decides a trade. :class:`~shared.domain.engine.MomentumEngine` signals, trails and
adds legs exactly as in the strategy service; :func:`~shared.domain.engine.exit_for_tick` is the
paper broker's GTT rule; :func:`~shared.domain.risk.check_order` is execution's guard. The driver
only plays the parts of the market and the broker: it turns each bar into its four ticks
(ticks.py), fills every entry at its reference price at once (as the paper broker does), and
keeps the book (open legs, capital deployed, the day's realised loss) the guards ask about.

Per step (one bar time; symbols in alphabetical order within it): for each of the bar's four
ticks, for each symbol with an active ladder — exits, then ``engine.on_tick`` (trailing, then at
most one new leg); then each bar's close — ``engine.on_bar`` (EMAs, the signal, P1 at the close).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from backtest.bars import BarSeries, infer_tick, infer_timeframe_ms, ohlcv_stamp
from backtest.ticks import bar_steps, tick_path
from shared.domain.candles import Bar
from shared.domain.engine import MomentumEngine, exit_for_tick
from shared.domain.ladder import EnterLeg, Ladder, Leg, LegState, RaiseStop, StrategyParams
from shared.domain.risk import OrderCheck, RiskLimits, RiskState, check_order
from shared.domain.session import SessionRules, ist_ordinal

DAY_START_BEFORE_OPEN_MS = 10 * 3_600_000  # execution's "today" starts 10 h before the open
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class LegResult:
    """One leg, with the columns of the live ``trades`` table (prices in paise)."""

    trade_id: str
    ladder_id: str
    symbol: str
    exchange: str
    leg: int  # position_number, 1..3
    qty: int
    entry_price: int
    entry_ms: int
    entry_time: str  # the timestamp of the bar it happened in, as it came in
    exit_price: int
    exit_ms: int
    exit_time: str
    exit_reason: str
    initial_stop: int
    stop_loss: int  # the last GTT trigger
    target: int | None
    highest_price: int
    status: str = "CLOSED"

    @property
    def pnl(self) -> int:
        """Gross PnL in paise."""
        return (self.exit_price - self.entry_price) * self.qty

    @property
    def pnl_pct(self) -> float:
        return (self.exit_price - self.entry_price) * 100.0 / self.entry_price


@dataclass
class BacktestResult:
    legs: list[LegResult]
    series: dict[str, BarSeries]  # the bars used (after --to), warm-up included
    emas: dict[str, list[tuple[float | None, ...]]]  # after each bar of series[s].bars
    traded_from: dict[str, int]  # index of the first traded bar
    step_ms: list[int]  # end of each step (bar time)
    equity: list[int]  # realised + unrealised PnL in paise after each step
    exposed_steps: int
    capital_paise: int
    rejections: Counter[str] = field(default_factory=Counter)
    stop_raises: int = 0

    @property
    def steps(self) -> int:
        return len(self.step_ms)

    @property
    def bars(self) -> int:
        return sum(len(s.bars) - self.traded_from[k] for k, s in self.series.items())


def default_capital(params: StrategyParams, limits: RiskLimits, symbols: int) -> int:
    """What the strategy can deploy: three legs a symbol at the capital per position, capped."""
    return min(limits.max_capital_paise, 3 * params.capital_per_position_paise * max(symbols, 1))


class _Driver:
    """The market and the paper broker around one engine (one run)."""

    def __init__(self, params: StrategyParams, limits: RiskLimits, rules: SessionRules) -> None:
        self.engine = MomentumEngine(params, rules)
        self.rules = rules
        self.limits = limits
        self.state = RiskState()
        self.ticks: dict[str, int] = {}
        self.ladders: list[Ladder] = []
        self.entry_at: dict[tuple[str, int], int] = {}  # (ladder_id, leg) -> bar index
        self.exit_at: dict[tuple[str, int], int] = {}
        self.realised = 0
        self.closed_today: deque[tuple[int, int]] = deque()  # (exit_ms, pnl) for the day's loss
        self.realised_recent = 0
        self.rejections: Counter[str] = Counter()
        self.stop_raises = 0

    # --- the broker ------------------------------------------------------------------------------

    def enter(self, d: EnterLeg, index: int) -> None:
        state = self.state
        state.market_open = self.rules.in_session(d.ts_ms)
        state.active_gtts = state.open_legs
        state.realised_loss_today_paise = self._loss_today(d.ts_ms)
        check = OrderCheck(d.symbol, f"{d.exchange}:{d.symbol}:{d.leg}", d.qty, d.ref_price,
                           self.ticks[d.symbol])
        reason = check_order(check, state, self.limits)
        if reason is not None:
            self.rejections[reason.value] += 1
            self.engine.on_entry_rejected(d.ladder_id, d.leg, d.ts_ms)
            return
        self.engine.on_entry_filled(d.ladder_id, d.leg, d.ref_price, d.qty, d.ts_ms)
        state.open_legs += 1
        state.deployed_paise += d.ref_price * d.qty
        self.entry_at[(d.ladder_id, d.leg)] = index
        if d.leg == 1:
            ladder = self.engine.ladder(d.ladder_id)
            assert ladder is not None
            self.ladders.append(ladder)

    def close(self, ladder: Ladder, leg: Leg, price: int, ts_ms: int, reason: str,
              index: int) -> None:
        pnl = (price - leg.entry_price) * leg.qty
        state = self.state
        state.open_legs -= 1
        state.deployed_paise -= leg.entry_price * leg.qty
        self.realised += pnl
        self.closed_today.append((ts_ms, pnl))
        self.realised_recent += pnl
        self.exit_at[(ladder.ladder_id, leg.leg)] = index
        self.engine.on_leg_closed(ladder.ladder_id, leg.leg, price, ts_ms, reason)

    def _loss_today(self, ts_ms: int) -> int:
        """Execution's rule: the net realised PnL of legs closed since today's start, as a loss."""
        start = self.rules.session_open_ms(ist_ordinal(ts_ms)) - DAY_START_BEFORE_OPEN_MS
        closed = self.closed_today
        while closed and closed[0][0] < start:
            self.realised_recent -= closed.popleft()[1]
        return -self.realised_recent if self.realised_recent < 0 else 0

    # --- the market ------------------------------------------------------------------------------

    def tick(self, symbol: str, ladder: Ladder, ts_ms: int, price: int, is_open: bool,
             index: int) -> None:
        """One tick of a symbol with an active ladder: exits, then trailing and the ladder."""
        for leg in ladder.legs.values():
            hit = exit_for_tick(leg, price, is_open)
            if hit is not None:
                self.close(ladder, leg, hit[0], ts_ms, hit[1], index)
        engine = self.engine
        for d in engine.on_tick(symbol, ts_ms, price):
            if type(d) is RaiseStop:
                self.stop_raises += 1
            elif type(d) is EnterLeg:
                self.enter(d, index)

    def end_of_data(self, symbol: str, bar: Bar, index: int) -> None:
        """A ladder still open when its symbol's data ends is closed at the last close."""
        ladder = self.engine.active_ladder(symbol)
        if ladder is None:
            return
        for leg in ladder.legs.values():
            if leg.state is LegState.OPEN:
                self.close(ladder, leg, bar.close, bar.end_ms, "end", index)

    def unrealised(self, last_close: Mapping[str, int]) -> int:
        total = 0
        for ladder in self.engine.ladders():
            price = last_close[ladder.symbol]
            for leg in ladder.legs.values():
                if leg.state is LegState.OPEN:
                    total += (price - leg.entry_price) * leg.qty
        return total


def _window(series: BarSeries, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """(first traded, end) bar indexes: bars before ``start_ms`` only warm the EMAs."""
    bars = series.bars
    end = len(bars)
    if end_ms is not None:
        while end and bars[end - 1].start_ms > end_ms:
            end -= 1
    traded = 0
    if start_ms is not None:
        while traded < end and bars[traded].start_ms < start_ms:
            traded += 1
    return traded, end


def as_series(
    data: Mapping[str, BarSeries] | Mapping[str, Sequence[Bar]] | Sequence[BarSeries],
) -> dict[str, BarSeries]:
    """Symbol -> BarSeries, alphabetical; plain bar lists get IST stamps and an inferred tick."""
    if not isinstance(data, Mapping):
        data = {s.symbol: s for s in data}
    out: dict[str, BarSeries] = {}
    for sym in sorted(data):
        value = data[sym]
        if isinstance(value, BarSeries):
            out[sym] = value
        else:
            bars = list(value)
            starts = [b.start_ms for b in bars]
            tf = infer_timeframe_ms(starts, bars[0].end_ms - bars[0].start_ms if bars else 1)
            out[sym] = BarSeries(sym, bars, [ohlcv_stamp(s) for s in starts], "NSE",
                                 infer_tick(bars), tf)
    return out


def run_backtest(
    series: Mapping[str, BarSeries] | Mapping[str, Sequence[Bar]] | Sequence[BarSeries],
    params: StrategyParams,
    limits: RiskLimits,
    rules: SessionRules,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    capital_paise: int | None = None,
    progress: Progress | None = None,
    progress_every: int = 20_000,
) -> BacktestResult:
    """Replay the bars through a fresh :class:`MomentumEngine`; legs come back in entry order.

    ``series``: BarSeries by symbol (or a list of them), or plain bar lists by symbol.

    Bars starting before ``start_ms`` only warm the indicators; bars after ``end_ms`` are left
    out. With ``rules.enabled`` bars outside the NSE session are skipped as live marketdata
    drops their ticks.
    """
    series = as_series(series)
    drv = _Driver(params, limits, rules)
    engine = drv.engine
    emas: dict[str, list[tuple[float | None, ...]]] = {}
    traded_from: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    last_index: dict[str, int] = {}
    for sym, s in series.items():
        if rules.enabled:
            s = _in_session(s, rules)
            series[sym] = s
        engine.add_instrument(sym, s.exchange, s.tick)
        drv.ticks[sym] = s.tick
        traded, hi = _window(s, start_ms, end_ms)
        if hi < len(s.bars):
            s = replace(s, bars=s.bars[:hi], stamps=s.stamps[:hi])
            series[sym] = s
        emas[sym] = [engine.warm_bars(sym, (bar,)) for bar in s.bars[:traded]]
        traded_from[sym] = traded
        spans[sym] = (traded, hi)
        last_index[sym] = hi - 1
    capital = capital_paise or default_capital(params, limits, len(series))
    total = sum(hi - lo for lo, hi in spans.values())
    step_ms: list[int] = []
    equity: list[int] = []
    exposed = 0
    done = 0
    state = drv.state
    last_close: dict[str, int] = {}
    active_ladder = engine.active_ladder
    on_bar = engine.on_bar
    emas_of = engine.emas
    bars_of = {sym: s.bars for sym, s in series.items()}
    for _start, group in bar_steps(bars_of, spans):
        was_exposed = state.open_legs > 0
        # 1. the bars' ticks, tick k of every symbol before tick k + 1 (entries fill at once,
        # so a ladder exists only while a leg is open)
        if was_exposed:
            active = [(sym, i, tick_path(bars_of[sym][i])) for sym, i in group
                      if active_ladder(sym) is not None]
            for k in range(4):
                for sym, i, path in active:
                    ladder = active_ladder(sym)
                    if ladder is not None:
                        ts, price = path[k]
                        drv.tick(sym, ladder, ts, price, k == 0, i)
        # 2. the bars' closes: EMAs, the signal, P1 at the close
        end = 0
        for sym, i in group:
            bar = bars_of[sym][i]
            decisions = on_bar(sym, bar)
            if decisions:
                for d in decisions:
                    if type(d) is EnterLeg:
                        drv.enter(d, i)
            emas[sym].append(emas_of(sym))
            last_close[sym] = bar.close
            if bar.end_ms > end:
                end = bar.end_ms
            if i == last_index[sym]:
                drv.end_of_data(sym, bar, i)
        if state.open_legs:
            equity.append(drv.realised + drv.unrealised(last_close))
            exposed += 1
        else:
            equity.append(drv.realised)
            exposed += was_exposed
        step_ms.append(end)
        done += len(group)
        if progress is not None and done % progress_every < len(group):
            progress(done, total)
    if progress is not None:
        progress(total, total)
    return BacktestResult(
        legs=_legs(drv, series), series=series, emas=emas, traded_from=traded_from,
        step_ms=step_ms, equity=equity, exposed_steps=exposed, capital_paise=capital,
        rejections=drv.rejections, stop_raises=drv.stop_raises,
    )


def _in_session(s: BarSeries, rules: SessionRules) -> BarSeries:
    keep = [i for i, b in enumerate(s.bars) if rules.in_session(b.start_ms)]
    if len(keep) == len(s.bars):
        return s
    dropped = len(s.bars) - len(keep)
    return BarSeries(s.symbol, [s.bars[i] for i in keep], [s.stamps[i] for i in keep],
                     s.exchange, s.tick, s.timeframe_ms, s.rounded_prices,
                     [*s.notes, f"{dropped} bars outside the NSE session skipped"])


def _legs(drv: _Driver, series: Mapping[str, BarSeries]) -> list[LegResult]:
    out: list[LegResult] = []
    for ladder in drv.ladders:
        stamps = series[ladder.symbol].stamps
        for leg in sorted(ladder.legs.values(), key=lambda x: x.leg):
            if leg.state is not LegState.CLOSED:
                continue
            key = (ladder.ladder_id, leg.leg)
            out.append(LegResult(
                trade_id=f"{ladder.ladder_id}:{leg.leg}", ladder_id=ladder.ladder_id,
                symbol=ladder.symbol, exchange=ladder.exchange, leg=leg.leg, qty=leg.qty,
                entry_price=leg.entry_price, entry_ms=leg.entry_ms or 0,
                entry_time=stamps[drv.entry_at[key]],
                exit_price=leg.exit_price or 0, exit_ms=leg.exit_ms or 0,
                exit_time=stamps[drv.exit_at[key]], exit_reason=leg.exit_reason or "",
                initial_stop=leg.initial_stop, stop_loss=leg.stop, target=leg.target,
                highest_price=leg.highest,
            ))
    out.sort(key=lambda r: (r.entry_ms, r.symbol, r.leg))
    return out
