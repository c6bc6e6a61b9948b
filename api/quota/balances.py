"""Live budget balances, shared by every replica (Redis) or held in process memory.

The database keeps each budget (a user's, a key's, an organisation's); the live store is what
admission reads, because it also knows what calls in flight have reserved. Per budget (an
*account*, named by `account_slot`) it holds:

- `balance`: what is left to reserve (nanos) = budget − spent − reserved;
- `reserved`: what calls in flight hold.

Reserving takes the most a call can cost from `balance`, only if `balance` covers it; settling
gives back what the call did not use. Both are single atomic steps, taken with the call's
rate-limit windows in `api.quota.store` (one Lua script in Redis), so concurrent calls can
never take the balance below zero. A user's balance is loaded from the database the first
time it is needed, as budget − reserved: holds still counted in `reserved` are given back to it.

A settlement never gives back more than `reserved` holds, and `reserved` never goes below
zero. In Redis the keys can also be lost (a flush, a restart without persistence): a balance
reloaded from the database then never had the holds of the calls in flight taken, so their
settlements must not give them back. Each load of `reserved` starts an *epoch* (a third key,
`epoch`); a hold carries the epoch it was taken in, and a settlement from an earlier epoch
only charges the call's cost to the reloaded balance (the database did not have it yet).
The memory store loses nothing, so it needs no epochs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis

from api.errors import DependencyUnavailableError
from api.state.redis_client import REDIS_DOWN, RETRY_AFTER_SECONDS, redis_unavailable


class BudgetStore(Protocol):
    async def set_budget(self, account: str, budget: int | None) -> None:
        """An administrator set the budget: balance = budget − what is reserved now."""
        ...

    async def add(self, account: str, amount: int) -> None:
        """An administrator recharged the budget by `amount` (if the balance is loaded)."""
        ...

    async def balance(self, account: str) -> int | None:
        """The live balance, or None when not loaded."""
        ...


class MemoryBudgetStore:
    def __init__(self) -> None:
        self._balance: dict[str, int] = {}
        self._reserved: dict[str, int] = {}

    def loaded(self, account: str) -> bool:
        return account in self._balance

    def covers(self, account: str, amount: int, initial_balance: int | None) -> bool:
        if account not in self._balance:
            # Loaded like `set_budget`: the holds still reserved are given back to it later.
            assert initial_balance is not None  # MemoryQuotaStore asks for it first
            self._balance[account] = initial_balance - self._reserved.get(account, 0)
        return self._balance[account] >= amount

    def take(self, account: str, amount: int) -> int:
        self._balance[account] -= amount
        self._reserved[account] = self._reserved.get(account, 0) + amount
        return self._balance[account]

    def release(self, account: str, reserved: int, spent: int) -> None:
        # Never more than is reserved: what was never taken is not given back.
        give = min(reserved, self._reserved.get(account, 0))
        self._reserved[account] = self._reserved.get(account, 0) - give
        if account in self._balance:
            self._balance[account] += give - spent

    async def set_budget(self, account: str, budget: int | None) -> None:
        if budget is None:
            self._balance.pop(account, None)
        else:
            self._balance[account] = budget - self._reserved.get(account, 0)

    async def add(self, account: str, amount: int) -> None:
        if account in self._balance:
            self._balance[account] += amount

    async def balance(self, account: str) -> int | None:
        return self._balance.get(account)


# The epoch of a user's `reserved` (KEYS: reserved, epoch): kept while both keys exist, else
# a new one, from Redis' clock (unique even when every key was lost), with `reserved` at 0:
# the holds it counted, if any, belong to a balance that is gone. Returns the epoch.
CURRENT_EPOCH = """
local function current_epoch(reserved, epoch)
  local current = redis.call('GET', epoch)
  if current and redis.call('EXISTS', reserved) == 1 then
    return current
  end
  local t = redis.call('TIME')
  current = t[1] .. '.' .. t[2]
  redis.call('SET', epoch, current)
  redis.call('SET', reserved, 0)
  return current
end
"""

# What calls in flight hold; below 0 only if written by another version of these scripts.
RESERVED_NOW = """
local function reserved_now(reserved)
  return math.max(0, tonumber(redis.call('GET', reserved) or '0'))
end
"""

# KEYS: balance, reserved, epoch.
_SET = CURRENT_EPOCH + RESERVED_NOW + """
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
  return 0
end
current_epoch(KEYS[2], KEYS[3])
-- The argument's own digits, then Redis's integer arithmetic: a Lua number (a double) is exact
-- to 2^53 nanos only, and is written as 1e+17 from 10^17 on.
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DECRBY', KEYS[1], reserved_now(KEYS[2]))
return 0
"""

_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
end
return 0
"""


class RedisBudgetStore:
    def __init__(self, redis: Redis, key_prefix: str, settled: Callable[[], Awaitable[None]] | None = None) -> None:
        """`settled`: as RedisLimitStore's, awaited before a balance is read or set."""
        self._settled = settled
        self._redis = redis
        self._prefix = key_prefix + "budget:"
        self._set = redis.register_script(_SET)
        self._add = redis.register_script(_ADD)

    def _keys(self, account: str) -> list[str]:
        return budget_keys(self._prefix, account)

    async def set_budget(self, account: str, budget: int | None) -> None:
        # The new balance is the budget less what calls in flight hold: this process's calls
        # that have ended give back their holds first, or they would be charged to the new
        # budget. (Another replica's settle within milliseconds of their end.)
        if self._settled is not None:
            await self._settled()
        try:
            await self._set(keys=self._keys(account), args=["" if budget is None else budget])
        except REDIS_DOWN as error:
            raise _not_applied() from error

    async def add(self, account: str, amount: int) -> None:
        try:
            await self._add(keys=self._keys(account)[:1], args=[amount])
        except REDIS_DOWN as error:
            raise _not_applied() from error

    async def balance(self, account: str) -> int | None:
        if self._settled is not None:
            await self._settled()
        try:
            raw = await self._redis.get(self._keys(account)[0])
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        return None if raw is None else int(raw)


def budget_keys(prefix: str, account: str) -> list[str]:
    """A budget's balance, reserved and epoch keys, under `prefix` (ends with 'budget:')."""
    return [f"{prefix}{account}:balance", f"{prefix}{account}:reserved", f"{prefix}{account}:epoch"]


def account_slot(holder: str, holder_id: int, period: str | None = None) -> str:
    """The name of a budget's live balance: a user's is its id (as before keys and
    organisations had budgets), a key's `key-<id>`, an organisation's `org-<id>`. A periodic
    allowance's names its period too (`…:p<start>`): each period starts a balance of its own."""
    base = str(holder_id) if holder == "user" else f"{'key' if holder == 'key' else 'org'}-{holder_id}"
    return base if period is None else f"{base}:p{period}"


def _not_applied() -> DependencyUnavailableError:
    # Budget changes apply the live balance before the database commits (api.quota.ledger).
    return DependencyUnavailableError(
        "Shared state (Redis) is unavailable: the budget change was not made (nothing was committed); retry it",
        retry_after=RETRY_AFTER_SECONDS,
    )
