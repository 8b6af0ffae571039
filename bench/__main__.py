"""`make bench`: every benchmark module's figures, one `name: value unit` line each.

Each module under bench/ exposes ``run() -> list[tuple[name, value, unit]]``. Progress goes to
stderr; the figures alone go to stdout. ``python -m bench ingest strategy`` runs a subset.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

MODULES = ("ingest", "strategy", "execution", "execution_floor", "kite_sim", "kite_ingest", "api",
           "backtest", "ws")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0],
        epilog="Figures go to stdout, progress to stderr. Exit status 1 if any benchmark failed.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(MODULES)}")
    chosen = parser.parse_args(argv).names or list(MODULES)
    unknown = [name for name in chosen if name not in MODULES]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    failed = 0
    for name in chosen:
        started = time.monotonic()
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.{name}")
        try:
            figures = module.run()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            print(f"[bench] {name} failed: {exc!r}", file=sys.stderr, flush=True)
            continue
        for figure, value, unit in figures:
            print(f"{figure}: {value:.6g} {unit}", flush=True)
        print(f"[bench] {name} done in {time.monotonic() - started:.1f}s", file=sys.stderr,
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
