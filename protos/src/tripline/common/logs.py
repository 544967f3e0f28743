"""Structured log lines for the collector and the agent.

Modules log with ``logger.info("event text", extra={"agent_id": ...})``; this formatter
turns the record and its extras into one JSON object per line (or ``key=value`` text
for a terminal). Only the CLI layer calls :func:`configure`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from tripline.common.terminal import escape, escape_json_text

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return escape_json_text(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        # Values and messages carry what agents sent: escaped, so one record stays one
        # line and a forged "\n12:00:00 INFO ..." cannot pass for a line of its own.
        fields = " ".join(f"{escape(k)}={escape(v)}" for k, v in _extras(record).items())
        text = f"{stamp} {record.levelname:<7} {record.name}: {escape(record.getMessage())}"
        if fields:
            text = f"{text}  {fields}"
        if record.exc_info:
            # A traceback keeps its lines, each indented and escaped, so none of them can
            # start like a log line.
            lines = self.formatException(record.exc_info).splitlines()
            text += "".join(f"\n    {escape(line)}" for line in lines)
        return text


def configure(fmt: str = "json", level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every job run at INFO; that is noise at a 10 s interval.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
