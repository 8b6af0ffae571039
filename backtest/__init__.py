"""The backtester: history through the same domain core that trades live (DESIGN §9).

``run_backtest`` (core.py) is the loop; ``replay_ticks``/``tick_path`` (ticks.py) the intra-bar
path the replay feed shares; bars.py loads CSV files or the ``ohlcv`` table.
"""
