"""Budgets that cannot be overspent: reserve the most a call can cost, settle to the real cost.

The most a call can cost is its prompt (estimated with a safety margin) and its completion up
to `max_tokens` at the router's prices. A budgeted user's call without `max_tokens` gets the
gateway's default (`Quotas.cap_completion`), so the completion cannot outgrow its reservation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

from api.errors import InsufficientBudgetError
from api.identity.principal import Budget, Principal
from api.observability.metrics import GatewayMetrics
from api.catalog.catalog import RouterEntry
from api.quota.balances import account_slot
from api.common import periods
from api.common.periods import label, next_start, period_start
from api.quota.store import BudgetHold
from api.usage.accounting import cost_nanos

# Tokenizers differ between tiktoken and the providers': reserve a margin on the prompt.
PROMPT_MARGIN = 1.25
PROMPT_SLACK = 16

# A caller's budget as read with its key loads the live balance only if read this recently.
# Keys stay cached while nothing changes them, but the usage writer lowers the database's
# budget by every call's cost: an older copy would load a balance that still has them.
FRESH_BUDGET_SECONDS = 1.0
# A period's live balance outlives the period by this much: its last calls still settle to it.
LIVE_BALANCE_GRACE_SECONDS = 86_400


class Budgeter:
    def __init__(self, metrics: GatewayMetrics, default_max_tokens: int) -> None:
        self._metrics = metrics
        self.default_max_tokens = default_max_tokens

    @staticmethod
    def applies(principal: Principal) -> bool:
        return principal.user_id is not None and bool(principal.budgets)

    def holds(
        self, principal: Principal, router: RouterEntry, estimate: Callable[[], int], completion_tokens: int,
        now: datetime | None = None,
    ) -> tuple[BudgetHold, ...]:
        """What to reserve from each of the caller's budgets for this call (the most it can cost,
        from each). `estimate` (the prompt's tokens) is only computed if there is a budget."""
        if not self.applies(principal):
            return ()
        prompt_bound = int(estimate() * PROMPT_MARGIN) + PROMPT_SLACK
        amount = cost_nanos(prompt_bound, completion_tokens, router.cost_prompt_micros, router.cost_completion_micros)
        fresh = time.monotonic() - principal.loaded_at < FRESH_BUDGET_SECONDS
        now = now or periods.utc_now()
        return tuple(hold_for(budget, amount, fresh, now) for budget in principal.budgets)

    def refuse(self, budget: Budget) -> NoReturn:
        self._metrics.rejections.labels("budget").inc()
        raise InsufficientBudgetError(f"Insufficient budget: {budget.describe()} cannot cover this call")


def hold_for(budget: Budget, amount: int, fresh: bool, now: datetime) -> BudgetHold:
    """A hold of `amount` on `budget`'s live balance: for an allowance, the current period's.
    The balance is loaded with the budget as read only if it was read recently and (for an
    allowance) in this period; else the store asks for it (`Quotas.admit`)."""
    if budget.period is None:
        return BudgetHold(account_slot(budget.holder, budget.holder_id), amount, budget.nanos if fresh else None)
    start = period_start(budget.period, now)
    current = fresh and budget.period_start == start
    ttl = int((next_start(budget.period, now) - now).total_seconds()) + LIVE_BALANCE_GRACE_SECONDS
    return BudgetHold(account_slot(budget.holder, budget.holder_id, label(start)), amount,
                      budget.nanos if current else None, ttl_seconds=ttl)
