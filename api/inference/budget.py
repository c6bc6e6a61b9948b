"""Budgets that cannot be overspent: reserve the most a call can cost, settle to the real cost.

The most a call can cost is its prompt (estimated with a safety margin) and its completion up
to `max_tokens` at the router's prices. A budgeted user's call without `max_tokens` gets the
gateway's default, so the completion cannot outgrow its reservation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.errors import InsufficientBudgetError
from api.identity.auth import Principal
from api.metrics import GatewayMetrics
from api.models.catalog import RouterEntry
from api.state.budgets import BudgetStore
from api.usage.accounting import cost_nanos

# Tokenizers differ between tiktoken and the providers': reserve a margin on the prompt.
PROMPT_MARGIN = 1.25
PROMPT_SLACK = 16


@dataclass
class Reservation:
    user_id: int
    amount: int
    settled: bool = False


class Budgeter:
    def __init__(self, store: BudgetStore, metrics: GatewayMetrics, default_max_tokens: int) -> None:
        self._store = store
        self._metrics = metrics
        self.default_max_tokens = default_max_tokens

    @staticmethod
    def applies(principal: Principal) -> bool:
        return principal.user_id is not None and principal.budget_nanos is not None

    def cap_completion(self, principal: Principal, body: dict[str, Any]) -> int:
        """The completion bound to reserve for; sets `max_tokens` on the body if it had none."""
        for field in ("max_completion_tokens", "max_tokens"):
            if isinstance(body.get(field), int):
                return body[field] * (body.get("n") or 1)
        if self.applies(principal):
            body["max_tokens"] = self.default_max_tokens
        return self.default_max_tokens * (body.get("n") or 1)

    async def reserve(
        self, principal: Principal, router: RouterEntry, prompt_tokens: int, completion_tokens: int
    ) -> Reservation | None:
        if not self.applies(principal):
            return None
        assert principal.user_id is not None and principal.budget_nanos is not None
        prompt_bound = int(prompt_tokens * PROMPT_MARGIN) + PROMPT_SLACK
        amount = cost_nanos(prompt_bound, completion_tokens, router.cost_prompt_micros, router.cost_completion_micros)
        if await self._store.reserve(principal.user_id, amount, principal.budget_nanos) is None:
            self._metrics.rejections.labels("budget").inc()
            raise InsufficientBudgetError("Insufficient budget")
        return Reservation(principal.user_id, amount)

    async def settle(self, reservation: Reservation | None, spent: int) -> None:
        if reservation is None or reservation.settled:
            return
        reservation.settled = True
        await self._store.settle(reservation.user_id, reservation.amount, spent)
