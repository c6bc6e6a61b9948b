"""What a data policy looks for in text: built-in detectors, each a fixed pattern (linear in
the text) confirmed by a validator where one exists — checksums from `python-stdnum`, never
hand-written — and administrators' own regular expressions, run by RE2, whose matching time is
linear in the text whatever the expression (no catastrophic backtracking). The built-in
patterns run on RE2 too. (This module is loaded with the first policy.)"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from stdnum import iban, luhn
from stdnum.es import dni
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.us import ssn

import re2

from api.errors import InvalidRequestError


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _card(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _phone(text: str) -> bool:
    return 8 <= len(_digits(text)) <= 15


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _national_id(text: str) -> bool:
    return any(validator.is_valid(text) for validator in (ssn, nir, dni, codicefiscale))


@dataclass(frozen=True)
class Detector:
    name: str
    placeholder: str
    pattern: Any  # compiled by RE2, run over the text's UTF-8 bytes (no offset conversions)
    confirm: Callable[[str], bool] | None = None
    # Characters that may not touch a match (RE2 has no look-arounds): before it, after it.
    not_before: str = ""
    not_after: str = ""

    def find(self, data: bytes) -> Iterator[tuple[int, int]]:
        """The spans (byte offsets) of `data`, UTF-8 text, that this detector reports."""
        for match in self.pattern.finditer(data):
            start, end = match.start(), match.end()
            if end == start or (start and _touches(_char_before(data, start), self.not_before)) or (
                end < len(data) and _touches(_char_at(data, end), self.not_after)
            ):
                continue
            if self.confirm is None or self.confirm(match.group(0).decode()):
                yield start, end


def _char_before(data: bytes, end: int) -> str:
    """The character that ends at byte `end` of UTF-8 `data`."""
    start = end - 1
    while start > 0 and 0x80 <= data[start] < 0xC0:  # continuation bytes
        start -= 1
    return data[start:end].decode(errors="replace")


def _char_at(data: bytes, start: int) -> str:
    """The character that starts at byte `start` of UTF-8 `data`."""
    end = start + 1
    while end < len(data) and 0x80 <= data[end] < 0xC0:
        end += 1
    return data[start:end].decode(errors="replace")


def _touches(char: str, forbidden: str) -> bool:
    return bool(forbidden) and (char in forbidden or ("w" in forbidden and (char.isalnum() or char == "_")))


def prefilter(detectors: list[Detector]) -> Any | None:
    """One RE2 set of the detectors' patterns: which of them match a text at all, in one pass
    over it. None if RE2 cannot build the set within its memory bound (each is then run)."""
    patterns = re2.Set.SearchSet(_options())
    try:
        for detector in detectors:
            patterns.Add(detector.pattern.pattern)
        patterns.Compile()
    except re2.error:
        return None
    return patterns


def _options() -> Any:
    options = re2.Options()
    options.max_mem = 8 << 20  # a huge expression fails to compile instead of taking memory
    options.log_errors = False
    return options


def _re2(pattern: str) -> Any:
    return re2.compile(pattern, _options())


# RE2 runs each in time linear in the text (a few microseconds a kilobyte, where Python's `re`
# took 15-50 µs a pattern); `w` in a boundary stands for any word character.
BUILT_IN: dict[str, Detector] = {
    detector.name: detector for detector in (
        Detector("secret", "[SECRET]", _re2(
            r"\b(?:sk-[A-Za-z0-9_-]{20,}|tg-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{20,}"
            r"|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})"
            r"|-----BEGIN [A-Z ]*PRIVATE KEY-----")),
        Detector("email", "[EMAIL]", _re2(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
        Detector("iban", "[IBAN]", _re2(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), iban.is_valid),
        Detector("payment_card", "[CARD]", _re2(r"\d(?:[ -]?\d){12,18}"), _card, not_before="0123456789-",
                 not_after="0123456789-"),
        Detector("national_id", "[NATIONAL_ID]", _re2(
            r"\b(?:\d{3}-\d{2}-\d{4}|[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3} ?\d{2}|\d{8}-?[A-Z]|[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z])\b"),
            _national_id),
        Detector("ip_address", "[IP_ADDRESS]", _re2(
            r"(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{1,4}:){2,7}(?::|[0-9A-Fa-f]{1,4})?|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}"),
            _ip, not_before="w.:", not_after="w.:"),
        Detector("phone", "[PHONE]", _re2(r"\+?\d[\d ().-]{6,18}\d"), _phone, not_before="w+", not_after="w"),
    )
}


def custom_detector(name: str, pattern: str) -> Detector:
    """An administrator's expression, run by RE2 (linear time); refused if RE2 cannot run it
    (back-references and look-arounds need backtracking)."""
    try:
        compiled = _re2(pattern)
    except re2.error as error:
        raise InvalidRequestError(f"pattern of '{name}' is not a regular expression RE2 can run in linear time: {error}") from None
    placeholder = "[" + re.sub(r"[^A-Z0-9_]", "_", name.upper()) + "]"
    return Detector(name, placeholder, compiled)
