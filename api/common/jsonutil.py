"""JSON on the hot path: orjson where it can, the standard library where orjson refuses
(integers beyond 64 bits, NaN), so any JSON a client or provider sends still round-trips."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, OverflowError):
        return json.dumps(value, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode()


def loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # NaN, Infinity: raises ValueError if really invalid
