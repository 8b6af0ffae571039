"""Structured logs: one JSON line an event, with the fields passed as ``extra``."""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# A credential in a URL's query (the dashboard's WebSocket sends its API key as ?key=, browsers
# cannot set headers there): uvicorn logs such URLs, and secrets are never logged.
_QUERY_SECRET = re.compile(r"([?&](?:key|api_key|token|access_token)=)[^&\s\"']+")


def redact(text: str) -> str:
    """``text`` with the values of credential query parameters replaced."""
    return _QUERY_SECRET.sub(r"\1[redacted]", text) if "=" in text else text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(doc, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
