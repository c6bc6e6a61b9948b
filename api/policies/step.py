"""Data policies as a step of the call pipeline: before the operation prepares its request
(a chat with search searches with the redacted question) and before admission (a refused
call takes nothing from the caller's limits)."""

from __future__ import annotations

from typing import Any

from api.calls.call import Call
from api.calls.pipeline import StepBase
from api.policies.book import PolicyBook
from api.policies.scanning import Findings, scan_body


class ApplyPolicies(StepBase):
    def __init__(self, book: PolicyBook) -> None:
        self._book = book

    async def enter(self, call: Call) -> None:
        scanner = self._book.scanner_for(call.principal)
        body: Any = getattr(call.operation, "body", None)
        if scanner is None or not isinstance(body, dict):
            return
        findings = Findings()
        try:
            # By what the body is, not by the route that took it: /v1/messages is a chat.
            scan_body(call.operation.endpoint, body, scanner, findings)
        finally:
            call.policy_findings = findings.summary()  # a refused call's record says why
