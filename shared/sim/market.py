"""A seeded, simulated NSE market: instruments, live price paths and their 15-minute history.

Randomness is allowed here (this is not the domain), but everything is a deterministic function
of ``(seed, instrument_token)``: the same seed always gives the same market. Prices are integer
paise on the instrument's tick.

The price process is a log-price random walk whose drift and volatility follow *regimes*
(trending up, trending down, chop) that last a number of 15-minute bars. The regime schedule is
indexed by bar: bar 0 is the first live bar after the sim session opens, negative bars are the
history. A share of the universe opens the session in an uptrend that paused in the last bars of
history (a pullback), so momentum set-ups are there to be found every morning; the rest trend
down, chop, or trend without a pause. The sim never reads strategy settings: the regimes are a
market model, and any strategy sees the same market.

History is generated *backwards* from the live starting price, bar by bar, each bar's noise
drawn from its own seeded stream: so ``generate_history`` returns the same bars however many are
asked for, and its last close is exactly where :class:`PricePath` starts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from shared.domain.candles import Bar
from shared.domain.session import SessionRules, ist_ordinal

BAR_SECONDS = 900.0
HISTORY_STEPS = 15  # sub-steps per history bar (one a minute), for its high and low
UP, DOWN, CHOP = "up", "down", "chop"
RESUME_SHARE = 0.5
# The "resume" set-up: an uptrend, a pullback, a short base, then the trend resumes at the open.
RESUME_PULLBACK_BARS = (8, 11)
RESUME_BASE_BARS = (4, 6)
RESUME_DEPTH = (20.0, 26.0)  # the pullback's depth in bars of the trend's drift
RESUME_LIVE = (2.0, 2.8)  # the resumed trend's drift as a multiple of the old one
RESUME_SIGMA = (0.5, 0.6)  # volatility during the pullback/base and the resumed trend, relative


@dataclass(frozen=True, slots=True)
class SimInstrument:
    symbol: str
    token: int
    tick: int  # paise
    base_price: int  # paise, around where the sim starts it
    lot_size: int = 1
    exchange: str = "NSE"
    name: str = ""


def _i(symbol: str, token: int, rupees: int, name: str) -> SimInstrument:
    tick = 10 if rupees >= 2000 else 5
    return SimInstrument(symbol, token, tick, rupees * 100, 1, "NSE", name)


# NSE equities with their Kite instrument tokens and a plausible price (₹50–₹2,500).
SIM_UNIVERSE: list[SimInstrument] = [
    _i("RELIANCE", 738561, 1420, "Reliance Industries"),
    _i("INFY", 408065, 1550, "Infosys"),
    _i("HDFCBANK", 341249, 1650, "HDFC Bank"),
    _i("ICICIBANK", 1270529, 1250, "ICICI Bank"),
    _i("SBIN", 779521, 810, "State Bank of India"),
    _i("ITC", 424961, 425, "ITC"),
    _i("AXISBANK", 1510401, 1120, "Axis Bank"),
    _i("KOTAKBANK", 492033, 1890, "Kotak Mahindra Bank"),
    _i("HINDUNILVR", 356865, 2380, "Hindustan Unilever"),
    _i("BHARTIARTL", 2714625, 1610, "Bharti Airtel"),
    _i("TATAMOTORS", 884737, 720, "Tata Motors"),
    _i("TATASTEEL", 895745, 148, "Tata Steel"),
    _i("WIPRO", 969473, 265, "Wipro"),
    _i("SUNPHARMA", 857857, 1710, "Sun Pharmaceutical"),
    _i("ONGC", 633601, 248, "Oil & Natural Gas Corp"),
    _i("NTPC", 2977281, 342, "NTPC"),
    _i("POWERGRID", 3834113, 305, "Power Grid Corp"),
    _i("COALINDIA", 5215745, 392, "Coal India"),
    _i("BAJAJFINSV", 4268801, 1930, "Bajaj Finserv"),
    _i("ASIANPAINT", 60417, 2290, "Asian Paints"),
    _i("HCLTECH", 1850625, 1620, "HCL Technologies"),
    _i("TECHM", 3465729, 1510, "Tech Mahindra"),
    _i("DRREDDY", 225537, 1260, "Dr. Reddy's Laboratories"),
    _i("CIPLA", 177665, 1490, "Cipla"),
    _i("GRASIM", 315393, 2460, "Grasim Industries"),
    _i("JSWSTEEL", 3001089, 1010, "JSW Steel"),
    _i("HINDALCO", 348929, 655, "Hindalco Industries"),
    _i("ADANIPORTS", 3861249, 1360, "Adani Ports & SEZ"),
    _i("ADANIENT", 6401, 2410, "Adani Enterprises"),
    _i("BPCL", 134657, 302, "Bharat Petroleum"),
    _i("IOC", 415745, 141, "Indian Oil Corp"),
    _i("GAIL", 1207553, 184, "GAIL (India)"),
    _i("INDUSINDBK", 1346049, 805, "IndusInd Bank"),
    _i("UPL", 2889473, 652, "UPL"),
    _i("TATAPOWER", 877057, 392, "Tata Power"),
    _i("VEDL", 784129, 452, "Vedanta"),
    _i("PNB", 2730497, 106, "Punjab National Bank"),
    _i("BANKBARODA", 1195009, 242, "Bank of Baroda"),
    _i("CANBK", 2763265, 104, "Canara Bank"),
    _i("IDFCFIRSTB", 2863105, 69, "IDFC First Bank"),
    _i("FEDERALBNK", 261889, 201, "Federal Bank"),
    _i("ASHOKLEY", 54273, 228, "Ashok Leyland"),
    _i("BHEL", 112129, 232, "Bharat Heavy Electricals"),
    _i("SAIL", 758529, 121, "Steel Authority of India"),
    _i("NMDC", 3924993, 71, "NMDC"),
    _i("IRCTC", 3484417, 752, "Indian Railway Catering"),
    _i("DLF", 3771393, 805, "DLF"),
    _i("HAVELLS", 2513665, 1560, "Havells India"),
    _i("DABUR", 197633, 502, "Dabur India"),
    _i("MARICO", 1041153, 702, "Marico"),
    _i("GODREJCP", 2585345, 1190, "Godrej Consumer Products"),
    _i("LUPIN", 2672641, 2010, "Lupin"),
    _i("AUROPHARMA", 70401, 1185, "Aurobindo Pharma"),
    _i("BIOCON", 2911489, 352, "Biocon"),
    _i("TATACONSUM", 878593, 1095, "Tata Consumer Products"),
    _i("JINDALSTEL", 1723649, 948, "Jindal Steel & Power"),
    _i("AMBUJACEM", 325121, 562, "Ambuja Cements"),
    _i("ACC", 5633, 1905, "ACC"),
    _i("PETRONET", 2905857, 301, "Petronet LNG"),
    _i("RECLTD", 3930881, 402, "REC"),
    _i("PFC", 3660545, 405, "Power Finance Corp"),
    _i("HINDPETRO", 359937, 398, "Hindustan Petroleum"),
    _i("BEL", 98049, 402, "Bharat Electronics"),
]


def sim_instruments(count: int, seed: int) -> list[SimInstrument]:
    """The first ``count`` instruments of the universe (a stable set for every seed), then, past
    the universe, synthetic ``SIMnnnn`` instruments with seeded prices for scale tests."""
    out = list(SIM_UNIVERSE[:count])
    rng = random.Random(f"ratchet-sim-extra:{seed}")
    for n in range(len(out), count):
        rupees = int(math.exp(rng.uniform(math.log(60), math.log(2300))))
        out.append(_i(f"SIM{n:04d}", 10_000_000 + n, rupees, f"Simulated {n}"))
    return out


# --- regimes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Segment:
    first: int  # first bar index (inclusive)
    last: int  # last bar index (inclusive)
    kind: str
    mu: float  # drift of log price per bar
    sigma: float  # volatility of log price per bar


class _Scenario:
    """The regime schedule of one instrument, a pure function of (seed, token)."""

    HISTORY_FIXED = 320  # bars of scripted history; older bars follow seeded random regimes

    def __init__(self, inst: SimInstrument, seed: int) -> None:
        rng = random.Random(f"ratchet-sim-scenario:{seed}:{inst.token}")
        self.sigma = rng.uniform(0.0022, 0.0040)
        self.start_log = math.log(inst.base_price) + rng.uniform(-0.05, 0.05)
        self.day_volume_avg = rng.uniform(40_000, 1_500_000) * 100_000 / inst.base_price
        pick = rng.random()
        sig = self.sigma
        segs: list[_Segment] = []
        h = -self.HISTORY_FIXED
        if pick < RESUME_SHARE:  # an uptrend that paused at the end of history, resumes at the open
            self.kind = "resume"
            # the pullback's depth is measured in the trend's own drift, so that it takes the
            # price below its short averages but (mostly) not below the longer ones
            pb = rng.randint(*RESUME_PULLBACK_BARS)
            mu_up = rng.uniform(0.0008, 0.0013)
            depth = mu_up * rng.uniform(*RESUME_DEPTH)
            flat = rng.randint(*RESUME_BASE_BARS)  # a short base after the pullback
            segs.append(_Segment(h, -pb - flat - 1, UP, mu_up, sig))
            segs.append(_Segment(-pb - flat, -flat - 1, DOWN, -depth / pb, sig * RESUME_SIGMA[0]))
            if flat:
                segs.append(_Segment(-flat, -1, CHOP, 0.0, sig * RESUME_SIGMA[0]))
            run = rng.randint(12, 24)
            segs.append(
                _Segment(0, run - 1, UP, mu_up * rng.uniform(*RESUME_LIVE), sig * RESUME_SIGMA[1])
            )
        elif pick < 0.65:
            self.kind = "trend"
            mu = rng.uniform(0.0004, 0.0009)
            run = rng.randint(6, 20)
            segs.append(_Segment(h, run - 1, UP, mu, sig))
        elif pick < 0.85:
            self.kind = "down"
            mu = -rng.uniform(0.0004, 0.0009)
            run = rng.randint(6, 20)
            segs.append(_Segment(h, run - 1, DOWN, mu, sig))
        else:
            self.kind = "chop"
            run = rng.randint(6, 20)
            segs.append(_Segment(h, run - 1, CHOP, 0.0, sig))
        self.history_segments = segs[:-1] if segs[-1].first >= 0 else segs
        self.live: list[_Segment] = [s for s in segs if s.last >= 0]
        self._live_rng = random.Random(f"ratchet-sim-live-regimes:{seed}:{inst.token}")
        self._old_rng_seed = f"ratchet-sim-old-regimes:{seed}:{inst.token}"
        self._old: list[_Segment] = []
        self._old_rng = random.Random(0)
        self.base_log = math.log(inst.base_price)

    def history_regime(self, index: int) -> tuple[float, float]:
        """(mu, sigma) of history bar ``index`` (< 0)."""
        for s in self.live:
            if s.first <= index <= s.last:
                return s.mu, s.sigma
        for s in self.history_segments:
            if s.first <= index <= s.last:
                return s.mu, s.sigma
        return self._old_regime(index)

    def _old_regime(self, index: int) -> tuple[float, float]:
        """Seeded random regimes before the scripted history, generated as deep as asked."""
        old = self._old
        if not old:
            self._old_rng = random.Random(self._old_rng_seed)
        rng = self._old_rng
        while not old or old[-1].first > index:
            last = old[-1].first - 1 if old else -self.HISTORY_FIXED - 1
            n = rng.randint(8, 40)
            kind = rng.choice((UP, DOWN, CHOP))
            mu = {UP: 1, DOWN: -1, CHOP: 0}[kind] * rng.uniform(0.0002, 0.0006)
            old.append(_Segment(last - n + 1, last, kind, mu, self.sigma))
        # segments run backwards in time: find the one holding index by bisection
        lo, hi = 0, len(old) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if old[mid].first > index:
                lo = mid + 1
            else:
                hi = mid
        return old[lo].mu, old[lo].sigma

    def live_regime(self, index: int, log_price: float) -> tuple[float, float]:
        """(mu, sigma) of live bar ``index`` (>= 0), extending the schedule as time goes on.

        New regimes lean back toward the instrument's base price, so a long run stays in range.
        """
        live = self.live
        while live[-1].last < index:
            rng = self._live_rng
            n = rng.randint(6, 24)
            drift = log_price - self.base_log
            r = rng.random()
            p_up, p_down = 0.36, 0.32
            if drift > 0.25:
                p_up, p_down = 0.1, 0.7
            elif drift < -0.25:
                p_up, p_down = 0.7, 0.1
            kind = UP if r < p_up else DOWN if r < p_up + p_down else CHOP
            mu = {UP: 1, DOWN: -1, CHOP: 0}[kind] * rng.uniform(0.0006, 0.0018)
            first = live[-1].last + 1
            live.append(_Segment(first, first + n - 1, kind, mu, self.sigma))
            if len(live) > 64:  # keep the lookup short on long runs
                del live[:-8]
        for s in reversed(live):
            if s.first <= index:
                return s.mu, s.sigma
        return 0.0, self.sigma


# --- live path -----------------------------------------------------------------------------


class PricePath:
    """The live price of one instrument, advanced by ``next_price(dt_s)`` (deterministic)."""

    __slots__ = (
        "instrument",
        "seed",
        "price",
        "day_volume",
        "_scn",
        "_rng",
        "_log",
        "_t",
        "_bar",
        "_mu_s",
        "_sig_s",
        "_tick",
        "_vol_rate",
    )

    def __init__(self, instrument: SimInstrument, seed: int) -> None:
        self.instrument = instrument
        self.seed = seed
        self._scn = _Scenario(instrument, seed)
        self._rng = random.Random(f"ratchet-sim-live:{seed}:{instrument.token}")
        self._tick = instrument.tick
        self._log = self._scn.start_log
        self.price = _on_tick(math.exp(self._log), self._tick)
        self.day_volume = 0
        self._t = 0.0  # live seconds since the open
        self._bar = -1
        self._mu_s = 0.0
        self._sig_s = 0.0
        self._vol_rate = self._scn.day_volume_avg / (25 * BAR_SECONDS)

    @property
    def start_price(self) -> int:
        """The first live price: the last close of :func:`generate_history`."""
        return _on_tick(math.exp(self._scn.start_log), self._tick)

    @property
    def elapsed_s(self) -> float:
        return self._t

    def next_price(self, dt_s: float) -> int:
        """Advance the path by ``dt_s`` simulated seconds; return the new price in paise."""
        t = self._t
        bar = int(t // BAR_SECONDS)
        if bar != self._bar:
            mu, sigma = self._scn.live_regime(bar, self._log)
            self._mu_s = mu / BAR_SECONDS
            self._sig_s = sigma / math.sqrt(BAR_SECONDS)
            self._bar = bar
        rng = self._rng
        self._log += self._mu_s * dt_s + self._sig_s * math.sqrt(dt_s) * rng.gauss(0.0, 1.0)
        self._t = t + dt_s
        self.day_volume += int(self._vol_rate * dt_s * (0.2 + 1.6 * rng.random())) + 1
        price = _on_tick(math.exp(self._log), self._tick)
        self.price = price
        return price

    def new_day(self) -> None:
        """The cumulative day volume starts again at a new session."""
        self.day_volume = 0


def _on_tick(value: float, tick: int) -> int:
    p = int(value / tick + 0.5) * tick
    return p if p >= tick else tick


# --- history -------------------------------------------------------------------------------


def _history_starts(end_ms: int, bars: int, rules: SessionRules) -> list[int]:
    """The starts of the ``bars`` bars that end at or before ``end_ms``, oldest first."""
    if bars <= 0:
        return []
    if not rules.enabled:
        tf = rules.timeframe_ms
        last = rules.bar_start(end_ms - tf)
        assert last is not None
        return [last - k * tf for k in range(bars - 1, -1, -1)]
    starts: list[int] = []
    day = ist_ordinal(end_ms)
    while len(starts) < bars:
        if rules.is_trading_day(day):
            today = [s for s in rules.session_bar_starts(day) if rules.bar_end(s) <= end_ms]
            starts[:0] = today
        day -= 1
    return starts[-bars:]


def generate_history(
    instrument: SimInstrument, seed: int, end_ms: int, bars: int, rules: SessionRules
) -> list[Bar]:
    """``bars`` past bars ending at ``end_ms`` (the sim session's open), oldest first.

    The same process as the live path, walked backwards from its starting price: the last close
    equals :attr:`PricePath.start_price`, and asking for more bars only adds older ones.
    """
    starts = _history_starts(end_ms, bars, rules)
    n = len(starts)
    if n == 0:
        return []
    scn = _Scenario(instrument, seed)
    tick = instrument.tick
    steps = HISTORY_STEPS
    opens_day = [rules.enabled and s == rules.session_open_ms(ist_ordinal(s)) for s in starts]
    # walk back: close of bar i (index i - n) from the close of the bar after it
    closes_log = [0.0] * n
    paths: list[list[float]] = [[] for _ in range(n)]
    log_close = scn.start_log
    for k in range(n - 1, -1, -1):
        index = k - n
        mu, sigma = scn.history_regime(index)
        rng = random.Random(f"ratchet-sim-bar:{seed}:{instrument.token}:{index}")
        step_mu, step_sig = mu / steps, sigma / math.sqrt(steps)
        rets = [step_mu + step_sig * rng.gauss(0.0, 1.0) for _ in range(steps)]
        if opens_day[k]:
            rets[0] += rng.gauss(0.0, 0.004)  # the overnight gap
        closes_log[k] = log_close
        total = sum(rets)
        log_open = log_close - total
        cum, path = log_open, [log_open]
        for r in rets:
            cum += r
            path.append(cum)
        path[-1] = log_close
        paths[k] = path
        log_close = log_open
    out: list[Bar] = []
    day_volume = scn.day_volume_avg / 25
    for k, start in enumerate(starts):
        pxs = [_on_tick(math.exp(x), tick) for x in paths[k]]
        if not opens_day[k] and out:
            pxs[0] = out[-1].close  # within a session a bar opens where the last one closed
        vrng = random.Random(f"ratchet-sim-vol:{seed}:{instrument.token}:{k - n}")
        volume = int(day_volume * vrng.uniform(0.4, 1.8) * (1.8 if opens_day[k] else 1.0))
        out.append(
            Bar(start, rules.bar_end(start), pxs[0], max(pxs), min(pxs), pxs[-1], max(volume, 1))
        )
    return out
