"""A report's answer: the JSON list, or CSV (`?format=csv`, or `Accept: text/csv`): one line
per item of the list, its nested objects flattened into dotted columns (`usage.cost`, `kWh.min`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api.common.schemas import ListPage

# A spreadsheet runs a cell that starts with one of these as a formula: such text (a tag, an
# end user's id, a name) is prefixed with a quote, as OWASP advises for CSV exports.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _columns(model: type[BaseModel], prefix: str = "") -> list[str]:
    columns: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            columns.extend(_columns(annotation, f"{prefix}{name}."))
        else:
            columns.append(prefix + name)
    return columns


def _flatten(values: dict[str, Any], prefix: str, into: dict[str, Any]) -> dict[str, Any]:
    for name, value in values.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}{name}.", into)
        elif isinstance(value, str) and value.startswith(_FORMULA_STARTS):
            into[prefix + name] = "'" + value
        else:
            into[prefix + name] = value
    return into


def csv_response(model: type[BaseModel], items: Sequence[BaseModel], name: str) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(model), lineterminator="\r\n")
    writer.writeheader()
    for item in items:
        writer.writerow(_flatten(item.model_dump(mode="json"), "", {}))
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


async def _wants_csv(
    request: Request,
    format: Annotated[Literal["json", "csv"] | None, Query(description="csv: the report as CSV (as does Accept: text/csv)")] = None,
) -> bool:
    if format is not None:
        return format == "csv"
    return "text/csv" in request.headers.get("accept", "")


WantsCsv = Annotated[bool, Depends(_wants_csv)]


def report_response(model: type[BaseModel], items: Sequence[BaseModel], total: int, csv: bool, name: str) -> Response:
    """The items as CSV, or as the JSON list serialised once by pydantic: a report of thousands
    of rows built from the database's own values is not validated again on the way out (what
    FastAPI does to a returned model, which cost more than the report's query)."""
    if csv:
        return csv_response(model, items, name)
    return Response(ListPage[model](data=items, total=total).model_dump_json(), media_type="application/json")  # type: ignore[valid-type]
