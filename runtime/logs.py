"""Log formatting for the servers: key=value text (default) or one JSON object per line.

Log lines are written as ``"event words key=value key=value"`` with the job id in them
(``job_id=...``). The JSON format lifts those pairs into fields, so a log pipeline can filter
on ``job_id`` without parsing, and both formats add the ``trace_id`` of the span the line was
logged in, so a line leads to its trace in Jaeger and back.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

# key=value, key='quoted', key="quoted"; values end at whitespace.
_PAIR = re.compile(r"""(?<![\w.])([a-z_][a-z0-9_]*)=('[^']*'|"[^"]*"|\S+)""")
_RESERVED = frozenset({"time", "level", "logger", "message", "trace_id", "span_id", "exception"})


def message_fields(message: str) -> dict[str, str]:
    """The ``key=value`` pairs of a log message (quotes around a value removed)."""
    fields: dict[str, str] = {}
    for key, value in _PAIR.findall(message):
        if key in _RESERVED or key in fields:
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        fields[key] = value
    return fields


def _span_ids() -> tuple[str, str]:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the message's key=value
    pairs (``job_id`` among them), ``trace_id``/``span_id`` and ``exception`` when present."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        body.update(message_fields(message))
        job_id = getattr(record, "job_id", None)
        if job_id and "job_id" not in body:
            body["job_id"] = str(job_id)
        trace_id, span_id = _span_ids()
        if trace_id:
            body["trace_id"] = trace_id
            body["span_id"] = span_id
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with `` trace_id=...`` appended inside a traced span."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id, _ = _span_ids()
        if trace_id and "trace_id=" not in record.getMessage():
            head, newline, rest = line.partition("\n")
            line = f"{head} trace_id={trace_id}{newline}{rest}"
        return line


def configure_logging(level: str, log_format: str, text_format: str) -> None:
    """Send every log record to stderr in ``log_format`` ("text" or "json").

    Args:
        level: "debug", "info", "warning" or "error".
        log_format: "text" (``text_format`` plus the trace id) or "json".
        text_format: the ``logging`` format string of the text lines.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(text_format))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
