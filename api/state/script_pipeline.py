"""The Lua scripts on the request path (admission and settlement), run through redis-py.

Every call goes through the app's `redis.asyncio.Redis` client (`build_redis`), so the URL,
TLS, credentials and pool settings are redis-py's own. What this adds is batching:

- the calls made while a batch is on its way to Redis go out together in the next one, as one
  `pipeline(transaction=False)`: one connection checkout, one write and one round trip for
  all of them, however many calls are in flight;
- one batch at a time per process, so calls reach Redis in the order they were made (a
  settlement is never overtaken by the admission made after it): Redis runs a pipeline's
  commands in order, and a batch leaves only once the one before it is answered;
- nothing is resent after a lost reply: a script that ran but whose answer was lost would be
  applied twice (a budget refunded twice can be overspent). `build_redis` gives the client no
  retries; a failed batch fails its callers, who fail closed;
- a NOSCRIPT answer (the script cache emptied by a restart, a failover or SCRIPT FLUSH) means
  the script did not run: every registered script is loaded, and those calls sent again, in
  order. Every script, not only the one missing: were only that one loaded, a batch holding
  a settlement whose script is still missing and the admission after it would see the
  admission run first;
- when Redis is down (a refused or broken connection, a timeout), the calls queued behind the
  failed batch fail with it at once, rather than each waiting out another timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from api.state.redis_client import REDIS_DOWN


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: list[str]
    args: list[Any]
    reply: asyncio.Future[Any]
    orphaned: Callable[[Any], None] | None  # gets the reply if `reply` was cancelled first


class ScriptPipeline:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._scripts: list[AsyncScript] = []

    def register(self, source: str) -> AsyncScript:
        script = self._redis.register_script(source)
        self._scripts.append(script)
        return script

    def submit(
        self, script: AsyncScript, keys: list[str], args: list[Any], orphaned: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any]:
        """Queue the call, in the order calls are made; the future gets its reply. Should the
        future be cancelled before the reply comes (its caller left), `orphaned` gets the
        reply instead, unless it is an error."""
        reply = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(script, keys, args, reply, orphaned))
        if self._sender is None:
            # Its first step runs after the callbacks already due in this loop turn: the calls
            # they make join this batch.
            self._sender = asyncio.create_task(self._send_queued(), name="redis-scripts")
        return reply

    async def _send_queued(self) -> None:
        batch: list[_Call] = []
        try:
            while self._queue:
                # A call whose caller left before it was sent has nothing to take back.
                batch, self._queue = [call for call in self._queue if not call.reply.cancelled()], []
                if batch:
                    await self._send(batch)
        finally:
            self._sender = None
            for call in batch + self._queue:  # only if this task itself was cancelled
                if not call.reply.done():
                    call.reply.set_exception(RedisConnectionError("the script pipeline was stopped"))

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._run(batch)
            unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if unknown:
                loading = self._redis.pipeline(transaction=False)
                for script in self._scripts:
                    loading.script_load(script.script)
                await loading.execute()
                # Should another replica have loaded the scripts between two of this batch's
                # calls, a later call ran before an earlier one resent here: an admission then
                # runs before a settlement, which can only refuse, never overspend.
                for i, reply in zip(unknown, await self._run([batch[i] for i in unknown]), strict=True):
                    replies[i] = reply
        except Exception as error:
            failed = batch
            if isinstance(error, REDIS_DOWN):
                failed, self._queue = batch + self._queue, []
            for call in failed:
                if not call.reply.done():
                    call.reply.set_exception(_copy(error))
            return
        for call, reply in zip(batch, replies, strict=True):
            _deliver(call, reply)

    async def _run(self, calls: list[_Call]) -> list[Any]:
        pipeline = self._redis.pipeline(transaction=False)
        for call in calls:
            # EVALSHA itself, not the Script object: a pipeline holding Script objects asks
            # Redis whether they exist (SCRIPT EXISTS) before every execution, a round trip.
            pipeline.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        return await pipeline.execute(raise_on_error=False)


def _deliver(call: _Call, reply: Any) -> None:
    if call.reply.done():  # its caller was cancelled
        if call.orphaned is not None and call.reply.cancelled() and not isinstance(reply, Exception):
            call.orphaned(reply)
    elif isinstance(reply, Exception):
        call.reply.set_exception(reply)
    else:
        call.reply.set_result(reply)


def _copy(error: Exception) -> Exception:
    """One exception per caller: each raise adds to the traceback of the object it raises."""
    try:
        return type(error)(*error.args)
    except Exception:  # an exception class with another signature
        return error
