"""Bars for the backtester: OHLCV CSV files (one a symbol) or the ``ohlcv`` table.

CSV columns: ``timestamp,open,high,low,close,volume`` with a header, one file a symbol named by the
symbol (``INFY.csv``). Timestamps are ISO dates or datetimes, naive (IST, DESIGN §9) or with an
offset, or epoch seconds/milliseconds. Each bar keeps its timestamp text *as it came in*, so the
outputs can write times exactly as the input had them. Prices become integer paise.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from shared.domain.candles import Bar
from shared.domain.session import MINUTE_MS, SessionRules, ist_datetime, ist_ordinal, ms_from_ist

DEFAULT_TICK = 5  # 0.05 rupees: NSE's tick for most equities (DESIGN §9)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


class DataError(ValueError):
    """Input that cannot be backtested (a missing column, a bad number, no bars)."""


@dataclass
class BarSeries:
    """One symbol's bars, oldest first, with the timestamp text each came with."""

    symbol: str
    bars: list[Bar]
    stamps: list[str]
    exchange: str = "NSE"
    tick: int = DEFAULT_TICK
    timeframe_ms: int = 15 * MINUTE_MS
    rounded_prices: int = 0  # prices with sub-paisa digits, rounded to the paisa
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.bars)


# --- parsing ------------------------------------------------------------------------------------


def parse_ms(text: str) -> int:
    """Epoch ms of a timestamp: naive ISO text is IST wall time; an offset is honoured."""
    text = text.strip()
    if text.isdigit():  # epoch seconds, or milliseconds when that large
        value = int(text)
        return value if value > 100_000_000_000 else value * 1000
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DataError(f"cannot read timestamp {text!r}") from exc
    if dt.tzinfo is None:
        return ms_from_ist(dt)
    delta = dt - _EPOCH_UTC
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def parse_paise(text: str) -> tuple[int, bool]:
    """(paise, rounded): exact for up to two decimals, else rounded half-even to the paisa."""
    text = text.strip()
    whole, dot, frac = text.partition(".")
    if dot and len(frac) <= 2 and frac.isdigit() and (whole.isdigit() or whole == ""):
        return int(whole or 0) * 100 + int(frac.ljust(2, "0")), False
    if not dot and text.isdigit():
        return int(text) * 100, False
    try:
        value = Decimal(text)
    except ArithmeticError as exc:
        raise DataError(f"cannot read price {text!r}") from exc
    if not value.is_finite():
        raise DataError(f"cannot read price {text!r}")
    paise = (value * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return int(paise), paise != value * 100


def infer_timeframe_ms(starts: Sequence[int], default_ms: int) -> int:
    """The most common gap between consecutive bars (weekends and holidays are rarer)."""
    gaps = Counter(b - a for a, b in zip(starts, starts[1:], strict=False) if b > a)
    if not gaps:
        return default_ms
    return max(gaps.items(), key=lambda kv: (kv[1], -kv[0]))[0]


def infer_tick(bars: Iterable[Bar]) -> int:
    """0.05 when every price sits on it (NSE), else the finest step the prices use."""
    g = 0
    for b in bars:
        g = math.gcd(g, b.open, b.high, b.low, b.close)
        if g == 1:
            return 1
    if g == 0 or g % DEFAULT_TICK == 0:
        return DEFAULT_TICK
    return g


def bar_end(start_ms: int, timeframe_ms: int, rules: SessionRules) -> int:
    """start + timeframe, cut at the session's close when the NSE session is on."""
    end = start_ms + timeframe_ms
    if rules.enabled:
        close = rules.session_close_ms(ist_ordinal(start_ms))
        if start_ms < close < end:
            return close
    return end


def build_series(
    symbol: str,
    rows: Iterable[tuple[str, int, int, int, int, int]],
    rules: SessionRules,
    *,
    exchange: str = "NSE",
    tick: int | None = None,
    default_timeframe_ms: int = 15 * MINUTE_MS,
    rounded: int = 0,
) -> BarSeries:
    """Bars from (stamp, open, high, low, close, volume) rows in paise, sorted, de-duplicated."""
    parsed = sorted(((parse_ms(s), s, o, h, lo, c, v) for s, o, h, lo, c, v in rows),
                    key=lambda r: r[0])
    notes: list[str] = []
    dedup = [r for i, r in enumerate(parsed) if i == 0 or r[0] != parsed[i - 1][0]]
    if len(dedup) < len(parsed):
        notes.append(f"{len(parsed) - len(dedup)} bars with a repeated timestamp dropped")
    starts = [r[0] for r in dedup]
    tf = infer_timeframe_ms(starts, default_timeframe_ms)
    bars: list[Bar] = []
    stamps: list[str] = []
    for start, stamp, o, h, lo, c, v in dedup:
        hi, low = max(h, o, c), min(lo, o, c)
        bars.append(Bar(start, bar_end(start, tf, rules), o, hi, low, c, v))
        stamps.append(stamp)
    series = BarSeries(symbol, bars, stamps, exchange, DEFAULT_TICK, tf, rounded, notes)
    series.tick = tick if tick is not None else infer_tick(bars)
    return series


# --- sources ------------------------------------------------------------------------------------


def read_csv(path: Path, rules: SessionRules, *, symbol: str | None = None,
             exchange: str = "NSE", tick: int | None = None) -> BarSeries:
    """One symbol's CSV (the symbol is the file name without its extension)."""
    rows: list[tuple[str, int, int, int, int, int]] = []
    rounded = 0
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        idx = [header.index(c) for c in COLUMNS]
        for line_no, row in enumerate(reader, start=2):
            if not row or not any(row):
                continue
            try:
                stamp = row[idx[0]].strip()
                values = []
                for j in idx[1:5]:
                    paise, was_rounded = parse_paise(row[j])
                    rounded += was_rounded
                    values.append(paise)
                vol_text = row[idx[5]].strip()
                volume = int(float(vol_text)) if vol_text else 0
            except (IndexError, ValueError) as exc:
                raise DataError(f"{path}:{line_no}: {exc}") from exc
            rows.append((stamp, values[0], values[1], values[2], values[3], volume))
    if not rows:
        raise DataError(f"{path}: no bars")
    return build_series(symbol or path.stem, rows, rules, exchange=exchange, tick=tick,
                        rounded=rounded)


def csv_files(data: Path, symbols: Sequence[str] | None = None) -> dict[str, Path]:
    """Symbol -> CSV file: a single file, or every ``*.csv`` of a folder (filtered by symbols)."""
    if data.is_file():
        found = {data.stem: data}
    elif data.is_dir():
        found = {p.stem: p for p in sorted(data.glob("*.csv"))}
    else:
        raise DataError(f"{data}: no such file or folder")
    if symbols:
        unknown = [s for s in symbols if s not in found]
        if unknown:
            raise DataError(f"no CSV for {', '.join(unknown)} in {data}")
        found = {s: found[s] for s in symbols}
    if not found:
        raise DataError(f"{data}: no CSV files")
    return found


def load_csv_dir(data: Path, rules: SessionRules, symbols: Sequence[str] | None = None, *,
                 exchange: str = "NSE", tick: int | None = None) -> dict[str, BarSeries]:
    return {sym: read_csv(path, rules, symbol=sym, exchange=exchange, tick=tick)
            for sym, path in csv_files(data, symbols).items()}


def ohlcv_stamp(start_ms: int) -> str:
    """How a stored bar's time is written: IST wall time with its offset."""
    return ist_datetime(start_ms).isoformat() + "+05:30"


def load_ohlcv(sessions: object, symbols: Sequence[str], rules: SessionRules, *,
               exchange: str = "NSE", timeframe_minutes: int = 15,
               from_ms: int | None = None, to_ms: int | None = None) -> dict[str, BarSeries]:
    """Bars from the ``ohlcv`` table (every stored bar of the symbols unless bounded)."""
    from sqlalchemy import select

    from shared.store.models import Instrument, Ohlcv

    out: dict[str, BarSeries] = {}
    with sessions() as session:  # type: ignore[operator]
        for symbol in symbols:
            query = select(Ohlcv.ts, Ohlcv.open, Ohlcv.high, Ohlcv.low, Ohlcv.close,
                           Ohlcv.volume).where(
                Ohlcv.exchange == exchange, Ohlcv.symbol == symbol,
                Ohlcv.timeframe == timeframe_minutes)
            if from_ms is not None:
                query = query.where(Ohlcv.ts >= datetime.fromtimestamp(from_ms / 1000, UTC))
            if to_ms is not None:
                query = query.where(Ohlcv.ts <= datetime.fromtimestamp(to_ms / 1000, UTC))
            rows = session.execute(query.order_by(Ohlcv.ts)).all()
            if not rows:
                raise DataError(f"no {timeframe_minutes}-minute bars of {exchange}:{symbol} "
                                "in ohlcv")
            inst = session.scalars(select(Instrument).where(
                Instrument.exchange == exchange, Instrument.tradingsymbol == symbol)).first()
            tick = _instrument_tick(inst)
            converted = [(ohlcv_stamp(_dt_ms(r.ts)), _rupee_paise(r.open), _rupee_paise(r.high),
                          _rupee_paise(r.low), _rupee_paise(r.close), int(r.volume))
                         for r in rows]
            out[symbol] = build_series(symbol, converted, rules, exchange=exchange, tick=tick,
                                       default_timeframe_ms=timeframe_minutes * MINUTE_MS)
    return out


def _instrument_tick(inst: object | None) -> int | None:
    if inst is None:
        return None
    for name in ("tick_size", "tick"):
        value = getattr(inst, name, None)
        if value is not None:
            paise = int((Decimal(str(value)) * 100).to_integral_value())
            return paise if paise > 0 else None
    return None


def _rupee_paise(value: Decimal) -> int:
    return int((Decimal(value) * 100).to_integral_value(rounding=ROUND_HALF_EVEN))


def _dt_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH_UTC
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
