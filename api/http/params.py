"""Ids in paths and query strings: strict decimal integers.

Left to pydantic's lax mode, "3\\n", " 3", "+3", "03" and "3.0" all read as 3, so
`DELETE /v1/admin/routers/3%0A` deleted router 3: a request that names a resource in a
non-canonical way acts on it anyway, past whatever filtered or logged the path as written. An
id is its canonical digits or a 422.

Also: a query parameter known under two names (Tollgate's and OpenGateLLM's) read as one.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from fastapi import Path, Query
from fastapi.exceptions import RequestValidationError
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


T = TypeVar("T")


def one_of(first: tuple[str, T | None], second: tuple[str, T | None]) -> T | None:
    """The value of a query parameter that has two names (today's and OpenGateLLM's): either
    one, or both with the same value; two different values are a 422, never a silent pick."""
    (first_name, first_value), (second_name, second_value) = first, second
    if first_value is not None and second_value is not None and first_value != second_value:
        raise RequestValidationError([{
            "type": "value_error", "loc": ("query", second_name), "input": second_value,
            "msg": f"{first_name} and {second_name} name the same setting: give one, or the same value",
        }])
    return first_value if first_value is not None else second_value
