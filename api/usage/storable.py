"""A usage record made storable by any database, so none is ever dropped for its content.

The model endpoints refuse what cannot be stored before a call starts, but a record also holds
what others chose: a key's name, a provider's token counts (a provider can answer 10**30). A
record the database refuses for its content is written with that content made storable rather
than not written at all: every call is accounted exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import re

from sqlalchemy import BigInteger, Integer, String

from api.db.tables import Usage
from api.usage.records import UsageRecord

# PostgreSQL's text types cannot hold NUL; UTF-8 cannot encode an unpaired surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_REPLACEMENT = "\ufffd"

_TEXT_LENGTHS = {c.key: c.type.length for c in Usage.__table__.c if isinstance(c.type, String) and c.type.length}
# BigInteger first: it is a subclass of Integer. Counts (tokens, cost) are summed into the daily
# roll-ups: held to 0..2**48 (no call is that large), so that sums of them still fit.
_COUNTS = {"prompt_tokens", "completion_tokens", "total_tokens", "cost_nanos"}
MAX_COUNT = 2**48
_INTEGER_BOUNDS = {
    c.key: (0, MAX_COUNT) if c.key in _COUNTS else (-(2**63), 2**63 - 1) if isinstance(c.type, BigInteger) else (-(2**31), 2**31 - 1)
    for c in Usage.__table__.c if isinstance(c.type, Integer) and not c.primary_key
}
_FLOATS = [f.name for f in dataclasses.fields(UsageRecord) if f.type in ("float", float)]


def storable(record: UsageRecord) -> UsageRecord:
    """`record` with what no database column could take replaced: unstorable characters by
    U+FFFD, text cut to its column's length, integers held within their column's range (counts
    within 0..MAX_COUNT), a non-finite float as 0. The same record when nothing needs it."""
    changes: dict[str, object] = {}
    for name, length in _TEXT_LENGTHS.items():
        value = getattr(record, name)
        if isinstance(value, str) and (len(value) > length or _UNSTORABLE.search(value)):
            changes[name] = _UNSTORABLE.sub(_REPLACEMENT, value)[:length]
    for name, (low, high) in _INTEGER_BOUNDS.items():
        value = getattr(record, name)
        if isinstance(value, int) and not low <= value <= high:
            changes[name] = max(low, min(high, value))
    for name in _FLOATS:
        value = getattr(record, name)
        if isinstance(value, float) and not math.isfinite(value):
            changes[name] = 0.0
    return dataclasses.replace(record, **changes) if changes else record
