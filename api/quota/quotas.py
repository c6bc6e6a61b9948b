"""A call's limits and budget together: admitted in one step, settled in one step.

`Limiter` says which rate-limit windows a call counts in, `Budgeter` what it must reserve;
the quota store takes both atomically (one Redis round trip), and gives back what the call
did not use once its usage is known. Both reserve a chat call's completion up to its bound, so
that bound must hold: a call a token limit or a budget counts gets `max_tokens` if it had none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from api.identity.principal import Budget, Principal
from api.providers.base import completion_limit
from api.quota.budget_holds import Budgeter
from api.quota.rate_limits import LimitCounter, Limiter, Ticket
from api.catalog.catalog import RouterEntry
from api.quota.store import BudgetHold, BudgetRelease, QuotaStore


# A budget removed since the caller's key was read: its hold is loaded with a balance no call
# can exhaust, for this call only (the key is read again within a second, without it).
UNLIMITED = 10**18


@dataclass
class QuotaPass:
    """What one admitted call holds until it is settled."""

    ticket: Ticket | None
    holds: tuple[BudgetHold, ...] = ()
    settled: bool = False
    epochs: tuple[str, ...] = ()  # the holds' (api.quota.balances): a settlement names what it gives back
    completion_bound: int | None = None  # the completion tokens reserved for

    @property
    def reserved_nanos(self) -> int | None:
        """The most the call may be charged: what it reserved from its budgets (None: no budget)."""
        return max(hold.amount for hold in self.holds) if self.holds else None

    def headers(self) -> dict[str, str]:
        return self.ticket.headers() if self.ticket is not None else {}


class Quotas:
    def __init__(
        self, store: QuotaStore, limiter: Limiter, budgeter: Budgeter, budget_of: Callable[[Budget], Awaitable[int | None]]
    ) -> None:
        """`budget_of(budget)`: what is left of it in the database now, a new period's
        allowance started there if it is due (None: no budget any more)."""
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
        limit = completion_limit(body)
        if limit is not None:
            return limit * choices
        default = self.budgeter.default_max_tokens
        if self.budgeter.applies(principal) or self.limiter.counts_tokens(principal, router):
            body["max_tokens"] = default
        return default * choices

    async def admit(
        self, principal: Principal, router: RouterEntry, estimate: Callable[[], int], completion_bound: int
    ) -> QuotaPass | None:
        """Count the call in the caller's windows on `router` and reserve the most it can cost
        from each of the caller's budgets, or refuse it (429 for a limit, 402 for a budget)."""
        plan = self.limiter.plan(principal, router, estimate, completion_bound)
        holds = self.budgeter.holds(principal, router, estimate, completion_bound)
        if plan is None and not holds:
            return None
        checks = plan.checks if plan else []
        # A caller cancelled during this await takes nothing: the store gives it back.
        decision = await self._store.admit(checks, holds)
        if decision.needs_budget:
            # These balances are not loaded (a first call, a new period, or Redis lost them) and
            # the caller's copy of the budgets may be out of date: load them from the database's.
            loaded = list(holds)
            for index in decision.needs_budget:
                budget = await self._budget_of(principal.budgets[index])
                loaded[index] = holds[index]._replace(initial_balance=budget if budget is not None else UNLIMITED)
            holds = tuple(loaded)
            decision = await self._store.admit(checks, holds)
        if not decision.admission.admitted:
            self.limiter.refuse(decision.admission)
        if decision.refused_hold is not None:
            self.budgeter.refuse(principal.budgets[decision.refused_hold])
        return QuotaPass(plan.ticket(decision.admission) if plan else None, holds, epochs=decision.epochs,
                         completion_bound=completion_bound)

    async def settle(self, quota: QuotaPass, total_tokens: int, cost_nanos: int) -> None:
        """Count the real tokens instead of the estimate and keep only the real cost; once."""
        if quota.settled:
            return
        quota.settled = True
        adjustments = self.limiter.adjustments(quota.ticket, total_tokens) if quota.ticket else []
        releases = [BudgetRelease(hold.account, hold.amount, cost_nanos, quota.epochs[i] if i < len(quota.epochs) else "")
                    for i, hold in enumerate(quota.holds)]
        await self._store.settle(adjustments, releases)
