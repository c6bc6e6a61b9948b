"""Ids in paths and query strings: strict decimal integers.

Left to pydantic's lax mode, "3\\n", " 3", "+3", "03" and "3.0" all read as 3, so
`DELETE /v1/admin/routers/3%0A` deleted router 3: a request that names a resource in a
non-canonical way acts on it anyway, past whatever filtered or logged the path as written. An
id is its canonical digits or a 422.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator

from api.common.schemas import MAX_ID

# MAX_ID has ten digits: a longer string is refused before it is converted.
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]{0,9}")


def parse_id(value: Any) -> Any:
    """The id a path or query parameter names, as the server reads it: canonical decimal
    digits (no sign, space, leading zero, fraction or exponent), else a validation error."""
    if isinstance(value, str):
        if not _CANONICAL_ID.fullmatch(value):
            raise ValueError("must be an integer written as plain decimal digits")
        return int(value)
    return value


StrictId = BeforeValidator(parse_id)
PathId = Annotated[int, Path(ge=1, le=MAX_ID), StrictId]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID), StrictId]
ChunkId = Annotated[int, Path(ge=0, le=2**24 - 1), StrictId]
