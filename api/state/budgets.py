"""Live budget balances, shared by every replica (Redis) or held in process memory.

The database keeps each user's budget; the live store is what admission reads, because it
also knows what calls in flight have reserved. Per user it holds:

- `balance`: what is left to reserve (nanos) = budget − spent − reserved;
- `reserved`: what calls in flight hold.

Reserving takes the most a call can cost from `balance`, only if `balance` covers it; settling
gives back what the call did not use. Both are single atomic steps, taken with the call's
rate-limit windows in `api.state.quotas` (one Lua script in Redis), so concurrent calls can
never take the balance below zero. A user's balance is loaded from the
database the first time it is needed.
"""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from api.errors import DependencyUnavailableError
from api.state.redis_client import REDIS_DOWN, RETRY_AFTER_SECONDS, redis_unavailable


class BudgetStore(Protocol):
    async def set_budget(self, user_id: int, budget: int | None) -> None:
        """An administrator set the budget: balance = budget − what is reserved now."""
        ...

    async def add(self, user_id: int, amount: int) -> None:
        """An administrator recharged the budget by `amount` (if the balance is loaded)."""
        ...

    async def balance(self, user_id: int) -> int | None:
        """The live balance, or None when not loaded."""
        ...


class MemoryBudgetStore:
    def __init__(self) -> None:
        self._balance: dict[int, int] = {}
        self._reserved: dict[int, int] = {}

    def covers(self, user_id: int, amount: int, initial_balance: int) -> bool:
        return self._balance.setdefault(user_id, initial_balance) >= amount

    def take(self, user_id: int, amount: int) -> int:
        self._balance[user_id] -= amount
        self._reserved[user_id] = self._reserved.get(user_id, 0) + amount
        return self._balance[user_id]

    def release(self, user_id: int, reserved: int, spent: int) -> None:
        self._reserved[user_id] = self._reserved.get(user_id, 0) - reserved
        if user_id in self._balance:
            self._balance[user_id] += reserved - spent

    async def set_budget(self, user_id: int, budget: int | None) -> None:
        if budget is None:
            self._balance.pop(user_id, None)
        else:
            self._balance[user_id] = budget - self._reserved.get(user_id, 0)

    async def add(self, user_id: int, amount: int) -> None:
        if user_id in self._balance:
            self._balance[user_id] += amount

    async def balance(self, user_id: int) -> int | None:
        return self._balance.get(user_id)


_SET = """
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
  return 0
end
local reserved = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('SET', KEYS[1], tonumber(ARGV[1]) - reserved)
return 0
"""

_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
end
return 0
"""


class RedisBudgetStore:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = key_prefix + "budget:"
        self._set = redis.register_script(_SET)
        self._add = redis.register_script(_ADD)

    def _keys(self, user_id: int) -> list[str]:
        return [f"{self._prefix}{user_id}:balance", f"{self._prefix}{user_id}:reserved"]

    async def set_budget(self, user_id: int, budget: int | None) -> None:
        try:
            await self._set(keys=self._keys(user_id), args=["" if budget is None else budget])
        except REDIS_DOWN as error:
            raise _not_applied() from error

    async def add(self, user_id: int, amount: int) -> None:
        try:
            await self._add(keys=self._keys(user_id)[:1], args=[amount])
        except REDIS_DOWN as error:
            raise _not_applied() from error

    async def balance(self, user_id: int) -> int | None:
        try:
            raw = await self._redis.get(self._keys(user_id)[0])
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        return None if raw is None else int(raw)


def _not_applied() -> DependencyUnavailableError:
    # The database is written first: say what to do rather than invite a second recharge.
    return DependencyUnavailableError(
        "Shared state (Redis) is unavailable: the live budget balance was not updated. Once Redis is back, "
        "set the user's budget again (PATCH) to apply the change",
        retry_after=RETRY_AFTER_SECONDS,
    )
