"""Budgets that cannot be overspent: reserve the most a call can cost, settle to the real cost.

The most a call can cost is its prompt (estimated with a safety margin) and its completion up
to `max_tokens` at the router's prices. A budgeted user's call without `max_tokens` gets the
gateway's default (`Quotas.cap_completion`), so the completion cannot outgrow its reservation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

from api.errors import InsufficientBudgetError
from api.identity.principal import Principal
from api.observability.metrics import GatewayMetrics
from api.catalog.catalog import RouterEntry
from api.quota.store import BudgetHold
from api.usage.accounting import cost_nanos

# Tokenizers differ between tiktoken and the providers': reserve a margin on the prompt.
PROMPT_MARGIN = 1.25
PROMPT_SLACK = 16

# A caller's budget as read with its key loads the live balance only if read this recently.
# Keys stay cached while nothing changes them, but the usage writer lowers the database's
# budget by every call's cost: an older copy would load a balance that still has them.
FRESH_BUDGET_SECONDS = 1.0


class Budgeter:
    def __init__(self, metrics: GatewayMetrics, default_max_tokens: int) -> None:
        self._metrics = metrics
        self.default_max_tokens = default_max_tokens

    @staticmethod
    def applies(principal: Principal) -> bool:
        return principal.user_id is not None and principal.budget_nanos is not None

    def hold(
        self, principal: Principal, router: RouterEntry, estimate: Callable[[], int], completion_tokens: int
    ) -> BudgetHold | None:
        """What to reserve from the caller's budget for this call, if it has one. `estimate`
        (the prompt's tokens) is only computed then."""
        if not self.applies(principal):
            return None
        assert principal.user_id is not None and principal.budget_nanos is not None
        prompt_bound = int(estimate() * PROMPT_MARGIN) + PROMPT_SLACK
        amount = cost_nanos(prompt_bound, completion_tokens, router.cost_prompt_micros, router.cost_completion_micros)
        fresh = time.monotonic() - principal.loaded_at < FRESH_BUDGET_SECONDS
        return BudgetHold(principal.user_id, amount, principal.budget_nanos if fresh else None)

    def refuse(self) -> NoReturn:
        self._metrics.rejections.labels("budget").inc()
        raise InsufficientBudgetError("Insufficient budget")
