"""A call's rate-limit windows and budget reservations, checked and taken in one atomic step.

A call may draw on several budgets at once (its key's, its user's, its organisation's): it
reserves the most it can cost from each. Admission is all-or-nothing across all of them:
either every window has room *and* every budget covers the reservation, and all are taken,
or nothing is. Settlement corrects the token windows and
gives back the unused reservation, also in one step. In Redis each is one Lua script, and a
call's settlement rides with the next admission, so a call costs about one round trip however
many limits and budgets apply; the counters and balances are the same keys `RedisLimitStore`
and `RedisBudgetStore` read and write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from itertools import groupby, repeat
from operator import attrgetter, itemgetter, truediv
from typing import Any, NamedTuple, Protocol

from redis.asyncio import Redis

from api.quota.balances import CURRENT_EPOCH, RESERVED_NOW, MemoryBudgetStore, budget_keys
from api.state.redis_client import REDIS_DOWN, redis_unavailable
from api.state.script_pipeline import ScriptPipeline
from api.quota.windows import Admission, MemoryLimitStore, WindowCheck, WindowState, state_from_fields

logger = logging.getLogger("tollgate.state")

MAX_CACHED_KEYS = 100_000  # past it, the cache of joined budget keys starts again

# A settlement waits this long for the next admission, so both share one pipeline and one
# round trip (at one call at a time, a round trip is a tenth of the gateway's added latency).
# Until then the call's hold stays taken: the wait can only refuse, never overspend. Reads of
# this process' counters and balances first send what waits (`flush`).
SETTLE_LINGER_SECONDS = 0.005


class BudgetHold(NamedTuple):
    account: str  # the budget's balance (api.quota.balances.account_slot)
    amount: int  # the most the call can cost (nanos)
    # The budget, to load the balance with if it is not loaded yet; None when the caller's
    # copy may be out of date: the store then asks for it (`needs_budget`).
    initial_balance: int | None
    ttl_seconds: int | None = None  # a periodic allowance's balance lives as long as its period


class BudgetRelease(NamedTuple):
    account: str
    reserved: int
    spent: int
    epoch: str = ""  # the hold's, from its QuotaDecision (the memory store has none)


class QuotaDecision(NamedTuple):
    admission: Admission  # refused by a window: that window; admitted: every window
    # Refused by a budget: the index of the first hold its balance could not cover.
    refused_hold: int | None = None
    epochs: tuple[str, ...] = ()  # holds taken: the epoch of the `reserved` each is counted in (Redis)
    # Nothing taken: these holds' balances are not loaded and they had no budget to load them with.
    needs_budget: tuple[int, ...] = ()

    @property
    def budget_refused(self) -> bool:
        return self.refused_hold is not None

    @property
    def admitted(self) -> bool:
        return self.admission.admitted and self.refused_hold is None and not self.needs_budget

    def epoch(self, hold: int) -> str:
        return self.epochs[hold] if hold < len(self.epochs) else ""


class QuotaStore(Protocol):
    async def admit(self, checks: list[WindowCheck], holds: Sequence[BudgetHold] = ()) -> QuotaDecision:
        """Take all or nothing. A caller cancelled while waiting ends up having taken nothing.
        Raises DependencyUnavailableError when the store cannot be reached: nothing is let
        through unchecked."""
        ...

    async def settle(self, adjustments: list[tuple[str, int]], releases: Sequence[BudgetRelease] = ()) -> None:
        """Add each delta to its window counter (by the key admit returned); release the hold.
        Never raises: a settlement the store cannot take is logged and dropped, so the call's
        usage record is still written."""
        ...


class MemoryQuotaStore:
    """Over the in-process stores; atomic because nothing in it awaits."""

    def __init__(self, limits: MemoryLimitStore, budgets: MemoryBudgetStore) -> None:
        self._limits = limits
        self._budgets = budgets

    async def admit(self, checks: list[WindowCheck], holds: Sequence[BudgetHold] = ()) -> QuotaDecision:
        unloaded = tuple(i for i, hold in enumerate(holds)
                         if hold.initial_balance is None and not self._budgets.loaded(hold.account))
        if unloaded:
            return QuotaDecision(Admission(True, ()), needs_budget=unloaded)
        refused = next((i for i, hold in enumerate(holds)
                        if not self._budgets.covers(hold.account, hold.amount, hold.initial_balance)), None)
        admission = self._limits.admit_now(checks, count=refused is None)
        if not admission.admitted:
            return QuotaDecision(admission)
        if refused is not None:
            return QuotaDecision(admission, refused_hold=refused)
        for hold in holds:
            self._budgets.take(hold.account, hold.amount)
        return QuotaDecision(admission)

    async def settle(self, adjustments: list[tuple[str, int]], releases: Sequence[BudgetRelease] = ()) -> None:
        for key, delta in adjustments:
            self._limits.adjust_now(key, delta)
        for release in releases:
            self._budgets.release(release.account, release.reserved, release.spent)


# Both scripts take each call's arguments, key names included, as one string of
# space-separated fields ('-' for an empty one): redis-py packs each argument of a command in
# Python, ~0.3-1 µs apiece, while splitting the string costs Redis a few microseconds in all.
# (The scripts already name keys of their own making, a window's counter with its index: the
# key names were never all declared. Redis's ACLs still check every key a script touches.)
_FIELDS = """
local function fields_of(packed)
  local fields = {}
  for field in string.gmatch(packed, '%S+') do
    fields[#fields + 1] = field ~= '-' and field or ''
  end
  return fields
end
"""


EMPTY = "-"  # an empty field

_limit_of = attrgetter("limit")


def _fields(values: list[int | str]) -> str:
    """Callers write an empty field as EMPTY."""
    return " ".join(map(str, values))


# One admission per ARGV, so the admissions queued together are one command and one reply
# (the script pipeline's batched scripts): each is taken or refused on its own, in order, as if
# each had been a script call of its own. An admission's fields: n, then per window its
# counter (without its window index), limit, length and amount; then h and, per hold, its
# balance, reserved and epoch keys, its amount, its initial balance ('' when unknown: {3,
# holds...} if a balance is not loaded) and the ttl of its keys in ms ('' for none). Its reply:
# admitted, {1, the windows' counters (with their index) joined by spaces, then used and reset
# per window, then the holds' epochs}; refused by a window,
# {0, the window, its key, used, reset}; by a budget, {2, the first hold it could not cover}.
# An admission that fails (a bug) is an error in its place; those before it stand.
_ADMIT = _FIELDS + CURRENT_EPOCH + RESERVED_NOW + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

local function admit(F)
  local n = tonumber(F[1])
  -- Each redis.call and each number written into a string costs about a microsecond or two:
  -- a window's suffix is made once per window length, and a counter is counted in at once
  -- (INCRBY, not GET then INCRBY), then given back should the call be refused after all.
  local suffixes, keys, used, resets, created = {}, {}, {}, {}, {}
  local function give_back(counted)
    for k = 1, counted do
      if created[k] then
        redis.call('DEL', keys[k])  -- made by this call: nothing of it stays behind
      else
        redis.call('DECRBY', keys[k], F[4 * k + 1])
      end
    end
  end
  for i = 1, n do
    local at = 4 * i - 2
    local limit = tonumber(F[at + 1])
    local window = tonumber(F[at + 2])
    local amount = tonumber(F[at + 3])
    local index = math.floor(now / window)
    local suffix = suffixes[window]
    if not suffix then
      suffix = ':' .. index
      suffixes[window] = suffix
    end
    local key = F[at] .. suffix
    local counted = redis.call('INCRBY', key, amount)
    local reset_ms = math.ceil(((index + 1) * window - now) * 1000)
    created[i] = counted == amount
    if created[i] then
      -- Created now (or back at 0): it expires after its window, whose end does not move.
      redis.call('PEXPIRE', key, reset_ms + 60000)
    end
    keys[i], used[i], resets[i] = key, counted, reset_ms
    if counted > limit then
      give_back(i)
      return {0, i, key, counted - amount, reset_ms}
    end
  end
  local h = tonumber(F[4 * n + 2])
  local epochs, lefts, amounts, unloaded = {}, {}, {}, {}
  for j = 1, h do
    local at = 4 * n + 6 * j - 3
    local balance, reserved, epoch = F[at], F[at + 1], F[at + 2]
    amounts[j] = F[at + 3]
    epochs[j] = current_epoch(reserved, epoch)
    local left = redis.call('GET', balance)
    if not left then
      if F[at + 4] == '' then
        unloaded[#unloaded + 1] = j
      else
        -- Loaded from the database's budget (or reloaded: Redis lost it). The holds `reserved`
        -- still counts are given back to it when their calls settle, so they are taken now.
        -- Written from the argument's own digits, then adjusted by Redis's integer arithmetic: a
        -- Lua number is a double, exact to 2^53 nanos only and written as 1e+17 from 10^17 on.
        redis.call('SET', balance, F[at + 4])
        left = redis.call('DECRBY', balance, reserved_now(reserved))
        if F[at + 5] ~= '' then
          redis.call('PEXPIRE', balance, F[at + 5])
          redis.call('PEXPIRE', reserved, F[at + 5])
          redis.call('PEXPIRE', epoch, F[at + 5])
        end
      end
    end
    lefts[j] = left
  end
  if #unloaded > 0 then
    give_back(n)
    return {3, unpack(unloaded)}
  end
  for j = 1, h do
    if tonumber(lefts[j]) < tonumber(amounts[j]) then
      give_back(n)
      return {2, j}
    end
  end
  for j = 1, h do
    local at = 4 * n + 6 * j - 3
    redis.call('DECRBY', F[at], amounts[j])
    redis.call('INCRBY', F[at + 1], amounts[j])
  end
  -- The counters' keys as one string: one value for the client to decode, not one per window.
  local out = {1, table.concat(keys, ' ')}
  for i = 1, n do
    out[2 * i + 1], out[2 * i + 2] = used[i], resets[i]
  end
  for j = 1, h do
    out[2 * n + 2 + j] = epochs[j]
  end
  return out
end

local replies = {}
for a = 1, #ARGV do
  local ok, reply = pcall(admit, fields_of(ARGV[a]))
  if ok then
    replies[a] = reply
  elseif type(reply) == 'table' and reply.err then
    replies[a] = reply
  else
    replies[a] = {err = tostring(reply)}
  end
end
return replies
"""

# Fields: m, then per window counter to adjust, its key (with its index) and delta; then per
# released budget its balance, reserved and epoch keys, the epoch it was held in, what it
# held and what it spent. A hold of the current epoch is given back (never more than
# `reserved` holds); one of an earlier epoch was taken from a balance since lost: the balance
# reloaded from the database never had it taken, nor this call's cost, which alone it is charged.
_SETTLE = _FIELDS + RESERVED_NOW + """
local F = fields_of(ARGV[1])
local m = tonumber(F[1])
for i = 1, m do
  local key = F[2 * i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, F[2 * i + 1])
  end
end
for at = 2 * m + 2, #F, 6 do
  local balance, reserved, epoch = F[at], F[at + 1], F[at + 2]
  local held_in = F[at + 3]
  local held, spent = tonumber(F[at + 4]), tonumber(F[at + 5])
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
    script's effect is the same as applying them one by one). They are merged once, as the
    batch leaves, by sorting and grouping (C code for each settlement, Python for each window
    or budget), not one by one as calls end."""

    def __init__(self, linger: asyncio.TimerHandle) -> None:
        self.linger = linger
        self.adjustments: list[tuple[str, int]] = []
        self.released: list[BudgetRelease] = []

    def add(self, adjustments: list[tuple[str, int]], releases: Sequence[BudgetRelease]) -> None:
        self.adjustments += adjustments
        self.released += releases

    def deltas(self) -> dict[str, int]:
        """Each window's total delta, those that add up to nothing left out."""
        totals = {key: sum(map(_delta_of, same)) for key, same in groupby(sorted(self.adjustments, key=_key_of), _key_of)}
        return {key: delta for key, delta in totals.items() if delta}

    def releases(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(account, epoch) → (reserved, spent)."""
        merged: dict[tuple[str, str], tuple[int, int]] = {}
        for slot, same in groupby(sorted(self.released, key=_slot_of), _slot_of):
            held = list(same)
            merged[slot] = (sum(map(_reserved_of, held)), sum(map(_spent_of, held)))
        return merged


_key_of, _delta_of = itemgetter(0), itemgetter(1)
_slot_of = attrgetter("account", "epoch")
_reserved_of, _spent_of = attrgetter("reserved"), attrgetter("spent")


class RedisQuotaStore:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        if any(character.isspace() for character in key_prefix):
            raise ValueError("a Redis key prefix cannot hold whitespace: the scripts' fields are separated by it")
        self._scripts = ScriptPipeline(redis)
        self._limit_prefix = key_prefix + "limit:"
        # A window's fields in an admission, filled by str.format (C code, one call per window).
        escaped = self._limit_prefix.replace("{", "{{").replace("}", "}}")
        self._window_fields = (escaped + "{0.key} {0.limit} {0.window_seconds} {0.amount}").format
        self._budget_prefix = key_prefix + "budget:"
        self._admit = self._scripts.register(_ADMIT, batched=True)
        self._settle = self._scripts.register(_SETTLE)
        # Each batch sent to Redis starts with the settlements made since the last one: Redis
        # applies them before the admissions that follow them (or were made with them).
        self._scripts.before_each_batch(self._flush_settlements)
        self._settlements: _Settlements | None = None
        self._sending: set[asyncio.Future[Any]] = set()
        # The same few budgets come back call after call: their three keys are joined once.
        self._budget_fields: dict[str, str] = {}

    def _budget_keys(self, account: str) -> str:
        """`account`'s balance, reserved and epoch keys, as fields."""
        keys = self._budget_fields.get(account)
        if keys is None:
            if len(self._budget_fields) >= MAX_CACHED_KEYS:
                self._budget_fields.clear()
            keys = self._budget_fields[account] = " ".join(budget_keys(self._budget_prefix, account))
        return keys

    async def admit(self, checks: list[WindowCheck], holds: Sequence[BudgetHold] = ()) -> QuotaDecision:
        fields = [str(len(checks)), " ".join(map(self._window_fields, checks)), str(len(holds))]
        fields += [
            f"{self._budget_keys(hold.account)} {hold.amount} "
            f"{EMPTY if hold.initial_balance is None else hold.initial_balance} "
            f"{EMPTY if hold.ttl_seconds is None else hold.ttl_seconds * 1000}"
            for hold in holds
        ]
        reply = self._scripts.submit(self._admit, " ".join(fields),
                                     orphaned=lambda result: self._give_back(result, checks, holds))
        try:
            result = await reply
        except asyncio.CancelledError:
            # The caller left while Redis was counting: whatever the script took is given
            # back, by `orphaned` when the reply comes, or here if it came just before.
            if reply.done() and not reply.cancelled() and reply.exception() is None:
                self._give_back(reply.result(), checks, holds)
            raise
        except REDIS_DOWN as error:
            # Fail closed: a call that cannot be counted is not made. (Had the script run
            # before the connection broke, its count stays taken: the safe side.)
            raise redis_unavailable() from error
        return self._decision(result, checks)

    def _give_back(self, result: Any, checks: list[WindowCheck], holds: Sequence[BudgetHold]) -> None:
        decision = self._decision(result, checks)
        if not decision.admitted:
            return
        adjustments = [(state.key, -check.amount) for state, check in zip(decision.admission.windows, checks, strict=True)]
        releases = [BudgetRelease(hold.account, hold.amount, 0, decision.epoch(i)) for i, hold in enumerate(holds)]
        self._queue_settlement(adjustments, releases)

    @staticmethod
    def _decision(result: Any, checks: list[WindowCheck]) -> QuotaDecision:
        outcome = result[0]
        if outcome == 2:
            return QuotaDecision(Admission(True, ()), refused_hold=result[1] - 1)
        if outcome == 3:
            return QuotaDecision(Admission(True, ()), needs_budget=tuple(j - 1 for j in result[1:]))
        if outcome == 0:
            index = result[1] - 1
            state = WindowState(result[2], checks[index].limit, result[3], result[4] / 1000)
            return QuotaDecision(Admission(False, (state,)))
        # Every window's state, made by C code (maps, slices and tuple.__new__) rather than by
        # a Python loop: a call counts in up to ten windows, every call.
        end = 2 + 2 * len(checks)
        states = tuple(map(state_from_fields, zip(result[1].split(), map(_limit_of, checks), result[2:end:2],
                                              map(truediv, result[3:end:2], repeat(1000)), strict=True)))
        return QuotaDecision(Admission(True, states), epochs=tuple(result[end:]))

    async def settle(self, adjustments: list[tuple[str, int]], releases: Sequence[BudgetRelease] = ()) -> None:
        # Not awaited: the answer (an error's included) need not wait out the linger; `flush`
        # and `close` are the ways to know it was sent.
        self._queue_settlement(adjustments, releases)

    def _queue_settlement(self, adjustments: list[tuple[str, int]], releases: Sequence[BudgetRelease]) -> None:
        if not adjustments and not releases:
            return
        batch = self._settlements
        if batch is None:
            linger = asyncio.get_running_loop().call_later(SETTLE_LINGER_SECONDS, self._flush_settlements)
            batch = self._settlements = _Settlements(linger)
        batch.add(adjustments, releases)

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
        deltas, releases = batch.deltas(), batch.releases()
        if not deltas and not releases:
            return  # deltas that added up to nothing: no script call
        fields: list[int | str] = [len(deltas)]
        for key, delta in deltas.items():
            fields += [key, delta]  # as the admission named it: prefix and window index included
        for (account, epoch), (reserved, spent) in releases.items():
            fields += [self._budget_keys(account), epoch or EMPTY, reserved, spent]
        # Ahead of the admissions waiting to be sent: what ended before them is applied first.
        reply = self._scripts.submit(self._settle, _fields(fields), ahead=True)
        self._sending.add(reply)
        reply.add_done_callback(lambda done: self._settled(done, deltas, releases))

    def _settled(self, reply: asyncio.Future[Any], deltas: dict[str, int], releases: dict[tuple[str, str], tuple[int, int]]) -> None:
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
                   "left reserved, nanos by budget: %s", len(deltas), len(releases), type(error).__name__,
                   error, {account: reserved - spent for (account, _), (reserved, spent) in releases.items()})

    async def close(self) -> None:
        await self.flush()
        await self._scripts.close()
