"""The simulated NSE universe: real symbols, Kite instrument tokens, tick sizes and price bands.

An NSE equity's Kite ``instrument_token`` is ``exchange_token << 8 | 1`` (segment 1 = NSE); the
low byte is what ``KiteTicker`` uses to pick the price divisor (paise for NSE). When
``shared.sim.market`` exists its universe is used (one source of truth for the sim); otherwise
this built-in list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

NSE_SEGMENT = 1


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable NSE equity; prices are int paise."""

    symbol: str
    name: str
    token: int
    base_price: int
    tick: int
    lot_size: int = 1
    band_pct: int = 20  # circuit band around the previous close, in percent
    exchange: str = "NSE"

    @property
    def exchange_token(self) -> int:
        return self.token >> 8

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


def nse_tick(price_paise: int) -> int:
    """NSE's price-banded tick size (paise) for an equity trading at ``price_paise``."""
    if price_paise < 250_00:
        return 1
    if price_paise < 1000_00:
        return 5
    if price_paise < 5000_00:
        return 10
    if price_paise < 10000_00:
        return 50
    return 100


# (symbol, name, exchange_token, approximate price in rupees, circuit band %)
_UNIVERSE: tuple[tuple[str, str, int, float, int], ...] = (
    ("RELIANCE", "RELIANCE INDUSTRIES", 2885, 1412.95, 20),
    ("INFY", "INFOSYS", 1594, 1498.40, 20),
    ("SBIN", "STATE BANK OF INDIA", 3045, 812.35, 20),
    ("ITC", "ITC", 1660, 418.60, 20),
    ("ICICIBANK", "ICICI BANK", 4963, 1291.70, 20),
    ("HDFCBANK", "HDFC BANK", 1333, 968.25, 20),
    ("AXISBANK", "AXIS BANK", 5900, 1146.80, 20),
    ("WIPRO", "WIPRO", 3787, 248.35, 20),
    ("TATASTEEL", "TATA STEEL", 3499, 158.42, 20),
    ("TATAMOTORS", "TATA MOTORS", 3456, 688.15, 20),
    ("ONGC", "OIL AND NATURAL GAS CORP.", 2475, 241.87, 20),
    ("NTPC", "NTPC", 11630, 338.90, 20),
    ("POWERGRID", "POWER GRID CORP. LTD.", 14977, 289.45, 20),
    ("COALINDIA", "COAL INDIA", 20374, 381.20, 20),
    ("BPCL", "BHARAT PETROLEUM CORP LT", 526, 318.75, 20),
    ("IOC", "INDIAN OIL CORP LTD", 1624, 141.36, 20),
    ("HINDALCO", "HINDALCO  INDUSTRIES", 1363, 702.60, 20),
    ("JSWSTEEL", "JSW STEEL", 11723, 1043.50, 20),
    ("CIPLA", "CIPLA", 694, 1512.30, 20),
    ("SUNPHARMA", "SUN PHARMACEUTICAL IND L", 3351, 1688.90, 20),
    ("HCLTECH", "HCL TECHNOLOGIES", 7229, 1552.40, 20),
    ("TECHM", "TECH MAHINDRA", 13538, 1486.70, 20),
    ("ADANIPORTS", "ADANI PORT & SEZ", 15083, 1401.10, 20),
    ("BHARTIARTL", "BHARTI AIRTEL", 10604, 1874.30, 20),
    ("KOTAKBANK", "KOTAK MAHINDRA BANK", 1922, 2048.60, 20),
    ("HINDUNILVR", "HINDUSTAN UNILEVER", 1394, 2376.40, 20),
    ("GRASIM", "GRASIM INDUSTRIES", 1232, 2712.50, 20),
    ("ASIANPAINT", "ASIAN PAINTS", 236, 2398.10, 20),
    ("M&M", "MAHINDRA & MAHINDRA", 2031, 2987.20, 20),
    ("TITAN", "TITAN COMPANY", 3506, 3402.80, 20),
    ("TCS", "TATA CONSULTANCY SERV LT", 11536, 3421.15, 20),
    ("LT", "LARSEN & TOUBRO", 11483, 3612.45, 20),
    ("VEDL", "VEDANTA", 3063, 452.30, 20),
    ("SAIL", "STEEL AUTHORITY OF INDIA", 2963, 121.55, 20),
    ("BHEL", "BHEL", 438, 232.40, 20),
    ("TATAPOWER", "TATA POWER CO", 3426, 392.85, 20),
    ("GAIL", "GAIL (INDIA)", 4717, 186.25, 20),
    ("DABUR", "DABUR INDIA", 772, 512.40, 20),
    ("BANKBARODA", "BANK OF BARODA", 4668, 241.05, 20),
    ("PNB", "PUNJAB NATIONAL BANK", 10666, 104.32, 20),
    ("IDEA", "VODAFONE IDEA", 14366, 7.85, 10),
    ("INDUSINDBK", "INDUSIND BANK", 5258, 812.90, 20),
    ("DRREDDY", "DR. REDDY S LABORATORIES", 881, 1268.40, 20),
    ("HEROMOTOCO", "HERO MOTOCORP", 1348, 4412.65, 20),
    ("BAJAJ-AUTO", "BAJAJ AUTO", 16669, 8650.50, 20),
    ("BAJFINANCE", "BAJAJ FINANCE", 317, 892.75, 20),
    ("ULTRACEMCO", "ULTRATECH CEMENT", 11532, 11520.00, 20),
    ("EICHERMOT", "EICHER MOTORS", 910, 5486.00, 20),
    ("NESTLEIND", "NESTLE INDIA", 17963, 2287.30, 20),
    ("MARUTI", "MARUTI SUZUKI INDIA", 10999, 12480.00, 20),
)


def builtin_instruments(count: int) -> list[Instrument]:
    """The first ``count`` instruments of the built-in list (prices snapped to their tick)."""
    out: list[Instrument] = []
    for symbol, name, exchange_token, rupees, band in _UNIVERSE[: max(1, count)]:
        paise = round(rupees * 100)
        tick = nse_tick(paise)
        out.append(Instrument(symbol, name, exchange_token << 8 | NSE_SEGMENT,
                              paise - paise % tick, tick, band_pct=band))
    return out


def load_instruments(count: int, seed: int) -> list[Instrument]:
    """``shared.sim.market``'s universe when it is installed, else the built-in one."""
    try:
        market = importlib.import_module("shared.sim.market")
        sims = market.sim_instruments(count, seed)
    except (ImportError, AttributeError):
        return builtin_instruments(count)
    names = {row[0]: row[1] for row in _UNIVERSE}
    return [
        Instrument(symbol=s.symbol, name=(getattr(s, "name", "") or names.get(s.symbol, s.symbol)
                                          ).upper(),
                   token=int(s.token), base_price=int(s.base_price), tick=int(s.tick),
                   lot_size=int(s.lot_size), exchange=s.exchange)
        for s in sims
    ]
