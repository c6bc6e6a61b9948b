"""What a caller may say of a call for the reports: a tag (a project, a team, a CI job), kept
on its usage record and in the daily roll-ups, which reports filter and group by."""

from __future__ import annotations

import re

from api.errors import InvalidRequestError

TAG_HEADER = "x-tollgate-tag"
TAG_CHARACTERS = "letters, digits and _ . : / @ + = -"
# Short and plain: a tag is a key of the roll-ups and a column of CSV exports.
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,64}")


def is_tag(value: str) -> bool:
    return TAG_PATTERN.fullmatch(value) is not None


def header_tag(value: str | None) -> str | None:
    """The tag of the `X-Tollgate-Tag` header, if any (400 if it is not a tag)."""
    if value is None:
        return None
    if not is_tag(value):
        raise InvalidRequestError(f"The {TAG_HEADER} header must be 1 to 64 {TAG_CHARACTERS}")
    return value
