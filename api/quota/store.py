"""A call's rate-limit windows and budget reservation, checked and taken in one atomic step.

Admission is all-or-nothing across both: either every window has room *and* the budget covers
the reservation, and all are taken, or nothing is. Settlement corrects the token windows and
gives back the unused reservation, also in one step. In Redis each is one Lua script, and a
call's settlement rides with the next admission, so a call costs about one round trip however
many limits and budgets apply; the counters and balances are the same keys `RedisLimitStore`
and `RedisBudgetStore` read and write.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from api.quota.balances import CURRENT_EPOCH, RESERVED_NOW, MemoryBudgetStore, budget_keys
from api.state.redis_client import REDIS_DOWN, redis_unavailable
from api.state.script_pipeline import ScriptPipeline
from api.quota.windows import Admission, MemoryLimitStore, WindowCheck, WindowState, decode

logger = logging.getLogger("tollgate.state")

# A settlement waits this long for the next admission, so both share one pipeline and one
# round trip (at one call at a time, a round trip is a tenth of the gateway's added latency).
# Until then the call's hold stays taken: the wait can only refuse, never overspend. Reads of
# this process' counters and balances first send what waits (`flush`).
SETTLE_LINGER_SECONDS = 0.005


@dataclass(frozen=True)
class BudgetHold:
    user_id: int
    amount: int  # the most the call can cost (nanos)
    # The user's budget, to load the balance with if it is not loaded yet; None when the
    # caller's copy may be out of date: the store then asks for it (`needs_budget`).
    initial_balance: int | None


@dataclass(frozen=True)
class BudgetRelease:
    user_id: int
    reserved: int
    spent: int
    epoch: str = ""  # the hold's, from its QuotaDecision (the memory store has none)


@dataclass(frozen=True)
class QuotaDecision:
    admission: Admission  # refused by a window: that window; admitted: every window
    budget_refused: bool = False
    epoch: str = ""  # a hold taken: the epoch of the `reserved` it is counted in (Redis)
    # Nothing taken: the balance is not loaded and the hold had no budget to load it with.
    needs_budget: bool = False

    @property
    def admitted(self) -> bool:
        return self.admission.admitted and not self.budget_refused and not self.needs_budget


class QuotaStore(Protocol):
    async def admit(self, checks: list[WindowCheck], hold: BudgetHold | None) -> QuotaDecision:
        """Take all or nothing. A caller cancelled while waiting ends up having taken nothing.
        Raises DependencyUnavailableError when the store cannot be reached: nothing is let
        through unchecked."""
        ...

    async def settle(self, adjustments: list[tuple[str, int]], release: BudgetRelease | None) -> None:
        """Add each delta to its window counter (by the key admit returned); release the hold.
        Never raises: a settlement the store cannot take is logged and dropped, so the call's
        usage record is still written."""
        ...


class MemoryQuotaStore:
    """Over the in-process stores; atomic because nothing in it awaits."""

    def __init__(self, limits: MemoryLimitStore, budgets: MemoryBudgetStore) -> None:
        self._limits = limits
        self._budgets = budgets

    async def admit(self, checks: list[WindowCheck], hold: BudgetHold | None) -> QuotaDecision:
        if hold is not None and hold.initial_balance is None and not self._budgets.loaded(hold.user_id):
            return QuotaDecision(Admission(True, ()), needs_budget=True)
        covered = hold is None or self._budgets.covers(hold.user_id, hold.amount, hold.initial_balance)
        admission = self._limits.admit_now(checks, count=covered)
        if not admission.admitted:
            return QuotaDecision(admission)
        if hold is None:
            return QuotaDecision(admission)
        if not covered:
            return QuotaDecision(admission, budget_refused=True)
        self._budgets.take(hold.user_id, hold.amount)
        return QuotaDecision(admission)

    async def settle(self, adjustments: list[tuple[str, int]], release: BudgetRelease | None) -> None:
        for key, delta in adjustments:
            self._limits.adjust_now(key, delta)
        if release is not None:
            self._budgets.release(release.user_id, release.reserved, release.spent)


# Both scripts take their arguments as one string of space-separated fields ('-' for an empty
# one): redis-py encodes each argument of a command in Python, ~0.5-1 µs apiece, while splitting
# the string costs Redis a few microseconds in all. The fields are read as ARGV was.
_FIELDS = """
local ARGV = (function(packed)
  local fields = {}
  for field in string.gmatch(packed, '%S+') do
    fields[#fields + 1] = field ~= '-' and field or ''
  end
  return fields
end)(ARGV[1])
"""


def _fields(values: list[int | str]) -> str:
    return " ".join(str(value) if value != "" else "-" for value in values)


# KEYS: the n window counters (without their window index), then the budget's balance,
# reserved and epoch keys when there is a hold. Fields: n, (limit, window, amount) per window,
# then the hold's amount and initial balance ('' when unknown: {3} if the balance is not
# loaded). Admitted with a hold, the last item returned is the epoch it was taken in.
_ADMIT = _FIELDS + CURRENT_EPOCH + RESERVED_NOW + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
-- Each redis.call and each number written into a string costs about a microsecond or two:
-- a window's suffix is made once per window length, and a counter's expiry is set once, when
-- it is created (its window's end does not move).
local suffixes, keys, used, resets, created = {}, {}, {}, {}, {}
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 1])
  local window = tonumber(ARGV[3 * i])
  local amount = tonumber(ARGV[3 * i + 1])
  local index = math.floor(now / window)
  local suffix = suffixes[window]
  if not suffix then
    suffix = ':' .. index
    suffixes[window] = suffix
  end
  local key = KEYS[i] .. suffix
  local stored = redis.call('GET', key)
  local current = tonumber(stored or '0')
  local reset_ms = math.ceil(((index + 1) * window - now) * 1000)
  if current + amount > limit then
    return {0, i, key, current, reset_ms}
  end
  keys[i], used[i], resets[i], created[i] = key, current + amount, reset_ms, not stored
end
local hold = #KEYS > n
local epoch
if hold then
  local balance, reserved = KEYS[n + 1], KEYS[n + 2]
  epoch = current_epoch(reserved, KEYS[n + 3])
  local amount = ARGV[3 * n + 2]
  local left = redis.call('GET', balance)
  if not left then
    if ARGV[3 * n + 3] == '' then
      return {3}
    end
    -- Loaded from the database's budget (or reloaded: Redis lost it). The holds `reserved`
    -- still counts are given back to it when their calls settle, so they are taken now.
    left = tonumber(ARGV[3 * n + 3]) - reserved_now(reserved)
    redis.call('SET', balance, left)
  end
  if tonumber(left) < tonumber(amount) then
    return {2}
  end
  redis.call('DECRBY', balance, amount)
  redis.call('INCRBY', reserved, amount)
end
local out = {1}
for i = 1, n do
  redis.call('INCRBY', keys[i], ARGV[3 * i + 1])
  if created[i] then
    redis.call('PEXPIRE', keys[i], resets[i] + 60000)
  end
  out[3 * i - 1], out[3 * i], out[3 * i + 1] = keys[i], used[i], resets[i]
end
if hold then
  out[3 * n + 2] = epoch
end
return out
"""

# KEYS: the m window counters to adjust (with their index), then each released budget's
# balance, reserved and epoch keys. Fields: m, the m deltas, then epoch, reserved and spent
# per budget. A hold of the current epoch is given back (never more than `reserved` holds);
# one of an earlier epoch was taken from a balance since lost: the balance reloaded from the
# database never had it taken, nor this call's cost, which alone it is charged.
_SETTLE = _FIELDS + RESERVED_NOW + """
local m = tonumber(ARGV[1])
for i = 1, m do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], ARGV[i + 1])
  end
end
for j = 0, (#KEYS - m) / 3 - 1 do
  local balance, reserved, epoch = KEYS[m + 3 * j + 1], KEYS[m + 3 * j + 2], KEYS[m + 3 * j + 3]
  local held_in = ARGV[m + 3 * j + 2]
  local held, spent = tonumber(ARGV[m + 3 * j + 3]), tonumber(ARGV[m + 3 * j + 4])
  local give = 0
  if held_in ~= '' and redis.call('GET', epoch) == held_in then
    give = math.min(held, reserved_now(reserved))
    redis.call('DECRBY', reserved, give)
  end
  if redis.call('EXISTS', balance) == 1 then
    redis.call('INCRBY', balance, give - spent)
  end
end
return 0
"""


class _Settlements:
    """The settlements made until the next admission (or `linger` fires), merged into one
    script call: deltas on the same window add up, releases of the same budget too (the
    script's effect is the same as applying them one by one)."""

    def __init__(self, linger: asyncio.TimerHandle) -> None:
        self.linger = linger
        self.deltas: dict[str, int] = {}
        self.releases: dict[tuple[int, str], list[int]] = {}  # (user, epoch) → [reserved, spent]

    def add(self, adjustments: list[tuple[str, int]], release: BudgetRelease | None) -> None:
        for key, delta in adjustments:
            self.deltas[key] = self.deltas.get(key, 0) + delta
        if release is not None:
            totals = self.releases.setdefault((release.user_id, release.epoch), [0, 0])
            totals[0] += release.reserved
            totals[1] += release.spent


class RedisQuotaStore:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._scripts = ScriptPipeline(redis)
        self._limit_prefix = key_prefix + "limit:"
        self._budget_prefix = key_prefix + "budget:"
        self._admit = self._scripts.register(_ADMIT)
        self._settle = self._scripts.register(_SETTLE)
        self._settlements: _Settlements | None = None
        self._sending: set[asyncio.Future[Any]] = set()

    def _budget_keys(self, user_id: int) -> list[str]:
        return budget_keys(self._budget_prefix, user_id)

    async def admit(self, checks: list[WindowCheck], hold: BudgetHold | None) -> QuotaDecision:
        keys = [self._limit_prefix + check.key for check in checks]
        args: list[int | str] = [len(checks)]
        for check in checks:
            args += [check.limit, check.window_seconds, check.amount]
        if hold is not None:
            keys += self._budget_keys(hold.user_id)
            args += [hold.amount, "" if hold.initial_balance is None else hold.initial_balance]
        self._flush_settlements()  # first: Redis applies them before this admission
        reply = self._scripts.submit(self._admit, keys, [_fields(args)], orphaned=lambda result: self._give_back(result, checks, hold))
        try:
            result = await reply
        except asyncio.CancelledError:
            # The caller left while Redis was counting: whatever the script took is given
            # back, by `orphaned` when the reply comes, or here if it came just before.
            if reply.done() and not reply.cancelled() and reply.exception() is None:
                self._give_back(reply.result(), checks, hold)
            raise
        except REDIS_DOWN as error:
            # Fail closed: a call that cannot be counted is not made. (Had the script run
            # before the connection broke, its count stays taken: the safe side.)
            raise redis_unavailable() from error
        return self._decision(result, checks)

    def _give_back(self, result: Any, checks: list[WindowCheck], hold: BudgetHold | None) -> None:
        decision = self._decision(result, checks)
        if not decision.admitted:
            return
        adjustments = [(state.key, -check.amount) for state, check in zip(decision.admission.windows, checks, strict=True)]
        release = BudgetRelease(hold.user_id, hold.amount, 0, decision.epoch) if hold is not None else None
        self._queue_settlement(adjustments, release)

    @staticmethod
    def _decision(result: Any, checks: list[WindowCheck]) -> QuotaDecision:
        outcome = int(result[0])
        if outcome == 2:
            return QuotaDecision(Admission(True, ()), budget_refused=True)
        if outcome == 3:
            return QuotaDecision(Admission(True, ()), needs_budget=True)
        if outcome == 0:
            index = int(result[1]) - 1
            state = WindowState(decode(result[2]), checks[index].limit, int(result[3]), int(result[4]) / 1000)
            return QuotaDecision(Admission(False, (state,)))
        states = tuple(
            WindowState(decode(result[1 + 3 * i]), check.limit, int(result[2 + 3 * i]), int(result[3 + 3 * i]) / 1000)
            for i, check in enumerate(checks)
        )
        epoch = decode(result[1 + 3 * len(checks)]) if len(result) > 1 + 3 * len(checks) else ""
        return QuotaDecision(Admission(True, states), epoch=epoch)

    async def settle(self, adjustments: list[tuple[str, int]], release: BudgetRelease | None) -> None:
        # Not awaited: the answer (an error's included) need not wait out the linger; `flush`
        # and `close` are the ways to know it was sent.
        self._queue_settlement(adjustments, release)

    def _queue_settlement(self, adjustments: list[tuple[str, int]], release: BudgetRelease | None) -> None:
        adjustments = [(key, delta) for key, delta in adjustments if delta]
        if not adjustments and release is None:
            return
        batch = self._settlements
        if batch is None:
            linger = asyncio.get_running_loop().call_later(SETTLE_LINGER_SECONDS, self._flush_settlements)
            batch = self._settlements = _Settlements(linger)
        batch.add(adjustments, release)

    async def flush(self) -> None:
        """Send the settlements waiting for an admission to ride with, and wait until Redis
        has applied them and those already on their way."""
        self._flush_settlements()
        if self._sending:
            await asyncio.shield(asyncio.gather(*self._sending, return_exceptions=True))

    def _flush_settlements(self) -> None:
        batch, self._settlements = self._settlements, None
        if batch is None:
            return
        batch.linger.cancel()
        keys = list(batch.deltas)
        args: list[int | str] = [len(keys), *batch.deltas.values()]
        for (user_id, epoch), (reserved, spent) in batch.releases.items():
            keys += self._budget_keys(user_id)
            args += [epoch, reserved, spent]
        reply = self._scripts.submit(self._settle, keys, [_fields(args)])
        self._sending.add(reply)
        reply.add_done_callback(lambda done: self._settled(done, batch))

    def _settled(self, reply: asyncio.Future[Any], batch: _Settlements) -> None:
        self._sending.discard(reply)
        error = None if reply.cancelled() else reply.exception()
        if error is None:
            return
        # Dropped, not retried: resent after a reset connection it could be applied twice
        # (a budget refunded twice can be overspent). Left undone, the windows keep the
        # estimates and the holds stay reserved: the safe side. The calls' usage records,
        # and the database budgets, are written all the same.
        level = logging.WARNING if isinstance(error, REDIS_DOWN) else logging.ERROR
        logger.log(level, "settlement of %d windows and %d budget holds dropped (%s: %s); "
                   "left reserved, nanos by user: %s", len(batch.deltas), len(batch.releases), type(error).__name__,
                   error, {user: reserved - spent for (user, _), (reserved, spent) in batch.releases.items()})

    async def close(self) -> None:
        await self.flush()
