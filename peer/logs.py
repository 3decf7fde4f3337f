"""Structured, leveled logs: one line per event, each carrying the peer id.

`json` format writes one JSON object per line (for machines); `text` writes
`time level peer logger: message key=value...` (for people). Extra fields passed with
`log.info("...", extra={"fields": {...}})` are included either way.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _PeerFilter(logging.Filter):
    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer

    def filter(self, record: logging.LogRecord) -> bool:
        record.peer = self.peer
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "peer": getattr(record, "peer", ""),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = " ".join(f"{k}={v}" for k, v in (getattr(record, "fields", {}) or {}).items())
        line = f"{stamp} {record.levelname.lower():<7} {getattr(record, 'peer', '')} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(peer: str, level: str = "info", fmt: str = "json", stream=None) -> None:
    """Route every `meshpay.*` logger to one handler on stderr (or `stream`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_PeerFilter(peer))
    root = logging.getLogger("meshpay")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    root.propagate = False
