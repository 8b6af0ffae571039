"""Many rows, or many ids, in one statement whose text does not grow with their number.

SQLAlchemy writes a multi-row INSERT, and an expanding IN, with one parameter per value, so the
text of the statement grows with the batch. psycopg then neither caches its parsing nor prepares
it (over 4 kB or 50 parameters), and Postgres parses and plans it afresh each time: on the
execution hot path that cost more than the rows themselves. Here each column travels as one
array parameter and is unnested in SQL; a list of ids is one array compared with ``= ANY``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ARRAY, BindParameter, ColumnElement, Integer, Table, any_, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Result
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON, TypeEngine


def any_of(
    column: ColumnElement[Any], name: str, item_type: TypeEngine[Any] | None = None
) -> ColumnElement[bool]:
    """``column = ANY(:name)``: ``name`` is given as one list, however long."""
    return column == any_(array_param(name, item_type or Integer()))


def array_param(name: str, item_type: TypeEngine[Any]) -> BindParameter[Any]:
    return bindparam(name, type_=ARRAY(item_type))


class ColumnsInsert:
    """``INSERT INTO table (columns) SELECT * FROM unnest(<one array per column>)``, optionally
    skipping rows whose key exists already and returning columns of the rows inserted. Values
    go to Postgres as given (no Python-side column defaults); JSON columns are serialised here."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        *,
        returning: Sequence[str] = (),
        skip_existing: Sequence[str] = (),
    ) -> None:
        dialect = postgresql.dialect()
        self.columns = tuple(columns)
        self._json = frozenset(name for name in columns if isinstance(table.c[name].type, JSON))
        arrays = ", ".join(f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])"
                           for name in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        if skip_existing:
            sql += f" ON CONFLICT ({', '.join(skip_existing)}) DO NOTHING"
        if returning:
            sql += f" RETURNING {', '.join(returning)}"
        self.statement = text(sql)

    def execute(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> Result[Any]:
        """Insert ``rows`` (each a mapping with every column) in one round trip."""
        params = {name: [json.dumps(row[name]) for row in rows] if name in self._json
                  else [row[name] for row in rows] for name in self.columns}
        return session.execute(self.statement, params)
