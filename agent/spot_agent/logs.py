"""Structured logs: one JSON object per line on stderr (journald keeps it; any log shipper parses it).

Every line carries the agent's ``agent_id`` and ``instance_id`` (given through a LoggerAdapter's
``extra``), so lines from many hosts can be told apart once collected.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extras, "exc"?}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str | int = "INFO", stream=None) -> logging.Handler:
    """JSON lines on stderr for the ``spot_agent`` loggers (idempotent: one handler)."""
    logger = logging.getLogger("spot_agent")
    for handler in list(logger.handlers):
        if getattr(handler, "_spot_agent", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._spot_agent = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    logger.propagate = False
    return handler


class AgentLog(logging.LoggerAdapter):
    """A logger that adds the agent's identity; ``extra`` is updated as the identity becomes known."""

    def process(self, msg, kwargs):
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs
