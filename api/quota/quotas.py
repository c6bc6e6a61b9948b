"""A call's limits and budget together: admitted in one step, settled in one step.

`Limiter` says which rate-limit windows a call counts in, `Budgeter` what it must reserve;
the quota store takes both atomically (one Redis round trip), and gives back what the call
did not use once its usage is known. Both reserve a chat call's completion up to its bound, so
that bound must hold: a call a token limit or a budget counts gets `max_tokens` if it had none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from api.identity.principal import Principal
from api.quota.budget_holds import Budgeter
from api.quota.rate_limits import LimitCounter, Limiter, Ticket
from api.catalog.catalog import RouterEntry
from api.quota.store import BudgetHold, BudgetRelease, QuotaStore


@dataclass
class QuotaPass:
    """What one admitted call holds until it is settled."""

    ticket: Ticket | None
    hold: BudgetHold | None
    settled: bool = False
    epoch: str = ""  # the hold's (api.quota.balances): a settlement names what it gives back

    def headers(self) -> dict[str, str]:
        return self.ticket.headers() if self.ticket is not None else {}


class Quotas:
    def __init__(
        self, store: QuotaStore, limiter: Limiter, budgeter: Budgeter, budget_of: Callable[[int], Awaitable[int | None]]
    ) -> None:
        """`budget_of(user_id)`: the user's budget in the database now (None: unlimited)."""
        self._store = store
        self.limiter = limiter
        self.budgeter = budgeter
        self._budget_of = budget_of

    async def counters(self, principal: Principal) -> list[LimitCounter]:
        """Where the caller stands on each of its limits now."""
        return await self.limiter.counters(principal)

    def cap_completion(self, principal: Principal, router: RouterEntry, body: dict[str, Any]) -> int:
        """The completion bound to reserve for a chat call on `router`: `max_completion_tokens`
        or `max_tokens`, times `n`, else the gateway's default, which is then set as the body's
        `max_tokens` if the caller's budget or a token limit on `router` counts on it."""
        choices = body.get("n") or 1
        for field in ("max_completion_tokens", "max_tokens"):
            if isinstance(body.get(field), int):
                return int(body[field]) * choices
        default = self.budgeter.default_max_tokens
        if self.budgeter.applies(principal) or self.limiter.counts_tokens(principal, router):
            body["max_tokens"] = default
        return default * choices

    async def admit(
        self, principal: Principal, router: RouterEntry, estimate: Callable[[], int], completion_bound: int
    ) -> QuotaPass | None:
        """Count the call in the caller's windows on `router` and reserve the most it can cost
        from the caller's budget, or refuse it (429 for a limit, 402 for the budget)."""
        plan = self.limiter.plan(principal, router, estimate, completion_bound)
        hold = self.budgeter.hold(principal, router, estimate, completion_bound)
        if plan is None and hold is None:
            return None
        checks = plan.checks if plan else []
        # A caller cancelled during this await takes nothing: the store gives it back.
        decision = await self._store.admit(checks, hold)
        if decision.needs_budget:
            # The balance is not loaded (the user's first call, or Redis lost it) and the
            # caller's copy of the budget may be out of date: load it from the database's.
            assert hold is not None
            budget = await self._budget_of(hold.user_id)
            hold = None if budget is None else replace(hold, initial_balance=budget)
            decision = await self._store.admit(checks, hold)
        if not decision.admission.admitted:
            self.limiter.refuse(decision.admission)
        if decision.budget_refused:
            self.budgeter.refuse()
        return QuotaPass(plan.ticket(decision.admission) if plan else None, hold, epoch=decision.epoch)

    async def settle(self, quota: QuotaPass, total_tokens: int, cost_nanos: int) -> None:
        """Count the real tokens instead of the estimate and keep only the real cost; once."""
        if quota.settled:
            return
        quota.settled = True
        adjustments = self.limiter.adjustments(quota.ticket, total_tokens) if quota.ticket else []
        release = BudgetRelease(quota.hold.user_id, quota.hold.amount, cost_nanos, quota.epoch) if quota.hold else None
        await self._store.settle(adjustments, release)
