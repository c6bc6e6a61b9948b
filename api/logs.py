"""Logging: one JSON object per line (or plain text), each carrying the id of the request it
belongs to (given by `api.http.middleware.request_id`).

A client may send its own `x-request-id` (a proxy's, a trace's) to find its calls in our logs;
it is echoed back in the response's `x-request-id`. Without one, the id is Tollgate's own, the
same as the usage record's `request_id` (`x-tollgate-request-id`). A client's id is only a
correlation id: usage records keep ids of their own, which no client can make collide.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextvars import ContextVar, Token
from typing import Any, Literal


LogFormat = Literal["json", "text"]




def new_request_id() -> str:
    return os.urandom(16).hex()


class _RequestIds:
    __slots__ = ("correlation", "own")

    def __init__(self, correlation: str, own: str | None) -> None:
        self.correlation = correlation  # in every log line of the request
        self.own = own  # the first usage record's id; None once taken


_REQUEST: ContextVar[_RequestIds | None] = ContextVar("tollgate_request", default=None)


def usage_request_id() -> str:
    """An id for a usage record: the request's own for its first record (so a client that sent
    no x-request-id finds its call by that id), a fresh one for any other (the embedding of a
    chat with search, calls made outside any request)."""
    current = _REQUEST.get()
    if current is None or current.own is None:
        return new_request_id()
    own, current.own = current.own, None
    return own


def correlation_id() -> str | None:
    current = _REQUEST.get()
    return current.correlation if current is not None else None


def enter_request(correlation: str, own: str) -> Token[_RequestIds | None]:
    """Make `correlation` the id of every log line of the current request, and `own` the id
    of its first usage record, until `leave_request(token)`."""
    return _REQUEST.set(_RequestIds(correlation, own))


def leave_request(token: Token[_RequestIds | None]) -> None:
    _REQUEST.reset(token)


# Attributes every LogRecord has: the rest were passed with `extra=` and go into the JSON.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        request_id = correlation_id()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _version, status = record.args
            entry.update(message=f"{method} {path} {status}", client=client, method=method, path=path, status=status)
        else:
            entry["message"] = record.getMessage()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = correlation_id()
        return f"{line} [request {request_id}]" if request_id is not None else line


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` for Tollgate and uvicorn alike. Handed to uvicorn, which
    applies it in each of its worker processes too (they do not inherit the parent's)."""
    formatter = "api.logs.JsonFormatter" if log_format == "json" else "api.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: {"handlers": [], "level": level, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
