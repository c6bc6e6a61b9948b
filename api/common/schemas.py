"""Types shared by every domain's schemas: ids, timestamps, list pages."""

from __future__ import annotations

from datetime import UTC, datetime
import functools
from enum import StrEnum
from http import HTTPStatus
import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator

MAX_ID = 2**31 - 1
# Year 9999: beyond it a timestamp cannot be stored as a date.
MAX_TIMESTAMP = 253_402_300_799

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Timestamp = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP, description="Unix time in seconds")]
Name = Annotated[str, Field(min_length=1, max_length=255)]

ItemT = TypeVar("ItemT")


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_storable(value: Any) -> Any:
    """Refuse NUL characters and unpaired surrogates anywhere in `value`: PostgreSQL cannot
    store them, and no legitimate name, email or password contains them."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise ValueError("text must not contain NUL characters or unpaired surrogates")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key)
            check_storable(item)
    elif isinstance(value, list):
        for item in value:
            check_storable(item)
    return value


class RequestModel(BaseModel):
    # Unknown fields are refused so a typo does not silently do nothing.
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        if cls.model_config.get("extra") == "ignore" and isinstance(data, dict):
            # Only the fields that are read: an ignored field is never stored, so what it
            # holds (a NUL, say) is no reason to refuse the request.
            known = _accepted_names(cls)
            data = {key: value for key, value in data.items() if key in known}
        return check_storable(data)


class OpenRequestModel(RequestModel):
    """A body whose schema in OpenGateLLM's reference allows additional properties: clients
    written for OpenGateLLM may send fields Tollgate does not know (newer or older ones), and
    those are dropped, not refused. Tollgate's own bodies, and the config file's entries, keep
    refusing unknown fields (a subclass may set `extra="forbid"` again)."""

    model_config = ConfigDict(extra="ignore")


@functools.cache
def _accepted_names(model: type[BaseModel]) -> frozenset[str]:
    """Every name a field of `model` may be given under in a request: its own and its aliases."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        if field.alias:
            names.add(field.alias)
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return frozenset(names)


StorableStr = Annotated[str, AfterValidator(check_storable)]


class ListPage(BaseModel, Generic[ItemT]):
    object: Literal["list"] = "list"
    data: list[ItemT]
    total: int


class ErrorOut(BaseModel):
    """Every error Tollgate answers itself: a message, or (422) the list of what failed validation."""

    detail: str | list[dict[str, Any]]


class RelayedErrorOut(BaseModel):
    """An error from a model endpoint: Tollgate's own (`detail`), or a provider's refusal relayed
    as the provider wrote it (OpenAI clients read its `error` object)."""

    model_config = ConfigDict(extra="allow")
    detail: str | list[dict[str, Any]] | None = None


def error_responses(*statuses: int, model: type[BaseModel] = ErrorOut) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: the error statuses it may answer, declared so the
    OpenAPI schema (and so clients and Schemathesis) know them. 422 is left to FastAPI, which
    declares it on every route that validates input."""
    return {status: {"model": model, "description": HTTPStatus(status).phrase} for status in statuses}


# What any authenticated endpoint may answer: an unparseable body or a NUL in the query (400),
# no valid key (401), not allowed (403), no such resource, or not the caller's (404), a clash
# with existing data (409), a body over the limit (413, before the route even runs), the
# database or Redis out of reach (503, with Retry-After).
CLIENT_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 503)
# And, for endpoints that call a provider: no budget (402), a limit reached (429), the
# provider failed, is unavailable or too slow (502, 503, 504).
MODEL_ERRORS = error_responses(400, 401, 402, 403, 404, 409, 413, 429, 502, 503, 504, model=RelayedErrorOut)


class OrderDirection(StrEnum):
    asc = "asc"
    desc = "desc"


def to_unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def from_unix(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)
