"""Write the real market data shipped with the ``backtesting`` package as Ratchet's CSV layout.

``python -m backtest.convert_samples [OUT_DIR]`` (default: backtest/data/) writes
``GOOG.csv`` (daily, 2004-08-19 .. 2013-03-01, US dollars) and ``EURUSD.csv`` (hourly,
2017-04-19 .. 2018-02-07, quoted in US cents per euro so that one pip is 0.01, the finest step a
paise-based core carries). Nothing is downloaded: the bars are the files inside the installed
package. These are not NSE bars, so backtest them with ``--no-session``.
"""

from __future__ import annotations

import csv
import sys
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent / "data"
HEADER = ("timestamp", "open", "high", "low", "close", "volume")


def _source(name: str) -> Path:
    import backtesting

    return Path(backtesting.__file__).resolve().parent / "test" / f"{name}.csv"


def _rows(name: str, scale: Decimal) -> list[tuple[str, ...]]:
    out = []
    with _source(name).open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)  # ",Open,High,Low,Close,Volume"
        for stamp, *prices, volume in reader:
            values = [str((Decimal(p) * scale).quantize(Decimal("0.01"), ROUND_HALF_EVEN))
                      for p in prices]
            out.append((stamp, *values, str(int(Decimal(volume)))))
    return out


def convert(out_dir: Path = HERE) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, scale in (("GOOG", Decimal(1)), ("EURUSD", Decimal(100))):
        path = out_dir / f"{name}.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(_rows(name, scale))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in convert(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
