"""The simulator's book on disk (SQLite), so killing and restarting it keeps orders, trades,
GTTs, holdings, sessions, the clock and the market where they were.

Every change to the book is written through (WAL, one transaction per call); market prices and
recorded bars are flushed every second and at shutdown.
"""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, id TEXT NOT NULL, day TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS records_day ON records (kind, day);
CREATE TABLE IF NOT EXISTS bars (
    token INTEGER NOT NULL, start_ms INTEGER NOT NULL, o INTEGER, h INTEGER, l INTEGER,
    c INTEGER, v INTEGER, PRIMARY KEY (token, start_ms));
"""


class Store:
    """A thin SQLite adapter; records are JSON documents keyed by (kind, id)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # one simulator per state dir: a second one would overwrite the first one's book
        self._lock = (path.parent / "kite_sim.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another kite simulator is using {path.parent}") from None
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()
        self._lock.close()

    def get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def put(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                         (key, orjson.dumps(value)))

    def save(self, kind: str, rid: str, day: str, data: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO records (kind, id, day, data) VALUES (?,?,?,?)",
                         (kind, rid, day, orjson.dumps(data)))

    def save_many(self, kind: str, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO records (kind, id, day, data) VALUES (?,?,?,?)",
                [(kind, rid, day, orjson.dumps(data)) for rid, day, data in rows])

    def delete(self, kind: str, rid: str) -> None:
        self._db.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, rid))

    def load(self, kind: str, day: str | None = None) -> list[dict[str, Any]]:
        if day is None:
            rows = self._db.execute("SELECT data FROM records WHERE kind = ? ORDER BY rowid",
                                    (kind,)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT data FROM records WHERE kind = ? AND day = ? ORDER BY rowid",
                (kind, day)).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def save_bars(self, rows: list[tuple[int, list[int]]]) -> None:
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO bars (token, start_ms, o, h, l, c, v) "
                "VALUES (?,?,?,?,?,?,?)", [(t, *bar) for t, bar in rows])

    def load_bars(self) -> list[tuple[int, list[int]]]:
        rows = self._db.execute(
            "SELECT token, start_ms, o, h, l, c, v FROM bars ORDER BY token, start_ms").fetchall()
        return [(r[0], list(r[1:])) for r in rows]
