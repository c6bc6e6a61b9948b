"""The Lua scripts on the request path (admission and settlement), run through redis-py.

The scripts go to Redis on one connection of their own, a redis-py `Connection` made by a
pool of one built from the app's client's own settings (URL, TLS, credentials, database,
client name): redis-py's public `send_packed_command` and `read_response`, with the commands
packed by hiredis' `pack_command`.
Its pipeline object cost ~60 µs of CPU a round trip more than the connection alone here
(a pool checkout and release, a timeout per command read and a task per command written;
docs/performance.md, sixth session), and a call to these scripts makes about one round trip
of its own. What this adds is batching:

- the calls made while a batch is on its way to Redis go out together in the next one: one
  write and one round trip for all of them, however many calls are in flight;
- the calls of a *batched* script that follow each other in a batch are one command: the
  script takes one ARGV per call and answers one reply per call. redis-py packs a command's
  arguments and parses its replies in Python, a few microseconds per command: one command for
  all the admissions in flight, not one each;
- one batch at a time per process, so calls reach Redis in the order they were made (a
  settlement is never overtaken by the admission made after it): Redis runs a connection's
  commands in order, and a batch leaves only once the one before it is answered;
- a batch has the client's command timeout as a whole (the connection has no socket timeout
  of its own); a batch that outlives it fails, and redis-py closes the connection, so no
  late reply is ever read as another batch's;
- nothing is resent after a lost reply: a script that ran but whose answer was lost would be
  applied twice (a budget refunded twice can be overspent). A failed batch fails its
  callers, who fail closed;
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
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hiredis import pack_command
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from api.state.redis_client import REDIS_DOWN

# When the client has no command timeout: a batch still ends, as a refusal, after this long.
DEFAULT_BATCH_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str
    batched: bool  # one ARGV per call, a list of one reply per call


@dataclass(slots=True)
class _Call:
    script: Script
    argument: str  # the scripts name the keys they touch in it (api.quota.store)
    reply: asyncio.Future[Any]
    orphaned: Callable[[Any], None] | None  # gets the reply if `reply` was cancelled first


class ScriptPipeline:
    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        settings = dict(pool.connection_kwargs)
        self._timeout = settings.get("socket_timeout") or DEFAULT_BATCH_TIMEOUT_SECONDS
        settings["socket_timeout"] = None  # the batch's own timeout bounds its reads and writes
        # Replies as str, decoded by the parser (hiredis, in C), not by each caller in Python.
        settings["decode_responses"] = True
        self._connections = ConnectionPool(connection_class=pool.connection_class, max_connections=1, **settings)
        self._connection: Connection | None = None
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self._scripts: list[Script] = []
        self._before_each_batch: list[Callable[[], None]] = []

    def register(self, source: str, batched: bool = False) -> Script:
        """Each call of a script is one argument (and no KEYS). `batched`: the calls in a row are
        one command, one ARGV per call, and it returns a list of one reply per call (an error
        reply in its place for a call that failed)."""
        script = Script(source, hashlib.sha1(source.encode()).hexdigest(), batched)  # noqa: S324 - Redis names scripts so
        self._scripts.append(script)
        return script

    def before_each_batch(self, callback: Callable[[], None]) -> None:
        """`callback` runs as each batch is about to be sent: what it submits `ahead` joins it."""
        self._before_each_batch.append(callback)

    def submit(
        self, script: Script, argument: str, orphaned: Callable[[Any], None] | None = None, ahead: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue the call, in the order calls are made (`ahead`: before every call not sent
        yet); the future gets its reply. Should the future be cancelled before the reply comes
        (its caller left), `orphaned` gets the reply instead, unless it is an error."""
        reply = asyncio.get_running_loop().create_future()
        call = _Call(script, argument, reply, orphaned)
        if ahead:
            self._queue.insert(0, call)
        else:
            self._queue.append(call)
        if self._sender is None:
            # Its first step runs after the callbacks already due in this loop turn: the calls
            # they make join this batch.
            self._sender = asyncio.create_task(self._send_queued(), name="redis-scripts")
        return reply

    async def close(self) -> None:
        """After the batch on its way, if any, is answered (or times out)."""
        if self._sender is not None:
            await asyncio.gather(asyncio.shield(self._sender), return_exceptions=True)
        self._connection = None
        await self._connections.aclose()

    async def _send_queued(self) -> None:
        batch: list[_Call] = []
        try:
            while self._queue:
                for callback in self._before_each_batch:
                    callback()
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
                await self._exchange([("SCRIPT", "LOAD", script.source) for script in self._scripts])
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
        """One reply per call, in order (an exception for a call that failed)."""
        commands: list[list[_Call]] = []  # a batched script's calls in a row are one command
        for call in calls:
            if commands and call.script.batched and commands[-1][0].script is call.script:
                commands[-1].append(call)
            else:
                commands.append([call])
        # EVALSHA, not EVAL: the scripts' source is sent once per connection's Redis, not per call.
        replies: list[Any] = []
        answers = await self._exchange([
            ("EVALSHA", command[0].script.sha, "0", *[call.argument for call in command]) for command in commands
        ])
        for command, reply in zip(commands, answers, strict=True):
            if isinstance(reply, Exception):
                replies += [reply] + [_copy(reply) for _ in command[1:]]
            elif command[0].script.batched:
                if not isinstance(reply, list) or len(reply) != len(command):
                    raise RuntimeError(f"a batched script answered {reply!r} to {len(command)} calls")
                replies += reply
            else:
                replies.append(reply)
        return replies

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write and read their replies; an error reply is its
        exception, in its place. Raises (the connection then closed) if Redis cannot be
        reached or does not answer within the timeout."""
        async with asyncio.timeout(self._timeout):
            if self._connection is None:
                self._connection = await self._connections.get_connection()
            else:
                # As the pool checks a connection it hands out: closed by the server since
                # (a restart, a failover) or left with data, it is made again first.
                await self._connections.ensure_connection(self._connection)
            connection = self._connection
            # Packed by hiredis in C: redis-py's `pack_commands` encodes and checks each part of
            # each command in Python first (a tenth of the quota steps' own work per call).
            await connection.send_packed_command(b"".join(map(pack_command, commands)), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:  # read whole: the next reply is the next command's
                    replies.append(error)
            return replies


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
