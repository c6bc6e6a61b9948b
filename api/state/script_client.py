"""A lean, pipelined Redis client for the Lua scripts on the request path.

Admission and settlement are two script calls per model request. Through redis-py each costs
~120-250 µs of CPU on this machine (connection-pool checkout, command packing, response
callbacks, retry wrappers) against ~40 µs for the round trip itself; it was a quarter of the
instructions a limited call cost (docs/performance.md). This client keeps only what those calls need, with hiredis
(the C protocol library redis-py itself uses) packing commands and parsing replies:

- one connection per process, pipelined: replies come back in the order commands were sent,
  so each call is a future in a FIFO queue. Redis runs commands one at a time anyway;
- the commands of one event-loop turn go out in one write;
- a call is a future the protocol resolves: no task, no timer of its own, so a reply reaches its
  caller in one turn of the event loop;
- every call is bounded by `timeout_seconds`. A call that times out closes the connection
  (replies after it could no longer be matched), which fails the calls behind it at once; the
  next call connects again. Nothing is retried: a script resent after a lost reply could
  count a request twice. Failures raise redis-py's ConnectionError / TimeoutError, which the
  callers already treat as "Redis is down";
- the URL and its TLS options are read by redis-py's own parser, and every new connection
  loads the registered scripts before its first call.

Everything else (reads for /v1/me/info, admin, health) goes through redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(frozen=True)
class Script:
    source: str
    sha: str


def _connection_options(url: str) -> tuple[dict[str, Any], ssl.SSLContext | None]:
    """The URL read as redis-py reads it (host, port or Unix path, db, credentials), and for
    `rediss://` the TLS context redis-py would build from its `ssl_*` query options."""
    options = parse_url(url)
    connection_class = options.pop("connection_class", None)
    tls = connection_class(**options).ssl_context.get() if connection_class is SSLConnection else None
    return options, tls


@dataclass(slots=True)
class _Call:
    reply: asyncio.Future[Any]
    command: tuple[Any, ...]
    deadline: float  # on the loop's clock
    script: Script | None = None  # sent again as EVAL if Redis answers NOSCRIPT
    orphaned: Callable[[Any], None] | None = None  # gets the reply if `reply` was cancelled first


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[_Call] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._outgoing: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, call: _Call) -> None:
        """Queue a command; those of one event-loop turn go out in one write."""
        self.waiting.append(call)
        loop = asyncio.get_running_loop()
        if not self._outgoing:
            loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = loop.call_at(call.deadline, self._check_deadline)
        self._outgoing.append(hiredis.pack_command(call.command))

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if not self.closed and self.transport is not None:
            self.transport.write(data)  # else its waiters have already been failed

    def _check_deadline(self) -> None:
        """One timer for every call in flight: replies come in order, so only the oldest
        call's deadline matters; when it is answered the timer moves on to the next one."""
        self._watchdog = None
        if not self.waiting or self.closed:
            return
        oldest = self.waiting[0]
        loop = asyncio.get_running_loop()
        if oldest.deadline <= loop.time():
            # Replies after it could no longer be matched: the connection goes.
            self.close(RedisTimeoutError(f"Redis did not answer within {self.timeout_seconds:g} s"))
        else:
            self._watchdog = loop.call_at(oldest.deadline, self._check_deadline)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:  # a reply nobody asked for: the stream cannot be trusted
                self.close(RedisConnectionError("unexpected reply from Redis"))
                return
            call = self.waiting.popleft()
            if isinstance(reply, ResponseError) and call.script is not None and str(reply).startswith("NOSCRIPT"):
                # The script cache was flushed under a live connection: EVAL sends the source
                # and caches it again.
                self.send(_Call(call.reply, ("EVAL", call.script.source, *call.command[2:]), call.deadline,
                                orphaned=call.orphaned))
            elif call.reply.done():  # its caller was cancelled or timed out
                if call.orphaned is not None and call.reply.cancelled() and not isinstance(reply, ResponseError):
                    call.orphaned(reply)
            elif isinstance(reply, ResponseError):
                call.reply.set_exception(reply)
            else:
                call.reply.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def close(self, error: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            reply = self.waiting.popleft().reply
            if not reply.done():
                reply.set_exception(error)


class ScriptClient:
    def __init__(self, url: str, timeout_seconds: float) -> None:
        self._options, self._tls = _connection_options(url)
        self._timeout = timeout_seconds
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._backlog: list[_Call] = []  # made while connecting, sent in order once connected
        self._scripts: list[Script] = []

    def register(self, source: str) -> Script:
        """A script this client runs: loaded into Redis on every new connection, before any
        call, so that after a Redis restart calls still reach Redis in the order they were made
        (a NOSCRIPT answer, resent as EVAL, would let later calls overtake it)."""
        script = Script(source, hashlib.sha1(source.encode()).hexdigest())
        self._scripts.append(script)
        return script

    def submit(
        self, script: Script, keys: list[str], args: list[Any], orphaned: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any]:
        """Send the call now, in the order calls are made; the future gets its reply. Should
        the future be cancelled before the reply comes (its caller left), `orphaned` gets the
        reply instead, unless it is an error. Awaited, not wrapped in a task: a reply reaches
        its caller in one turn of the event loop."""
        return self._submit(("EVALSHA", script.sha, len(keys), *keys, *args), script, orphaned)

    async def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return await self.submit(script, keys, args)

    async def execute(self, *command: Any) -> Any:
        return await self._submit(command, None, None)

    def _submit(self, command: tuple[Any, ...], script: Script | None, orphaned: Callable[[Any], None] | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), command, loop.time() + self._timeout, script, orphaned)
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            protocol.send(call)
        else:
            self._backlog.append(call)
            self._connect()
        return call.reply

    def _connect(self) -> None:
        """One attempt at a time, shared by every call that finds no connection: when it
        fails, they all fail with it (within one timeout), rather than each trying again."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._attempt())
            self._connecting.add_done_callback(self._attempted)

    def _attempted(self, attempt: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        backlog, self._backlog = self._backlog, []
        if attempt.cancelled() or attempt.exception() is not None:
            error = RedisConnectionError("client closed") if attempt.cancelled() else attempt.exception()
            for call in backlog:
                if not call.reply.done():
                    call.reply.set_exception(error)
            return
        protocol = self._protocol = attempt.result()
        deadline = asyncio.get_running_loop().time() + self._timeout  # their wait starts now
        for call in backlog:
            if not call.reply.cancelled():  # its caller left before it was sent: nothing to take back
                call.deadline = deadline
                protocol.send(call)

    async def _attempt(self) -> _Protocol:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._open()
        except TimeoutError as error:
            raise RedisTimeoutError(f"connecting to Redis took over {self._timeout:g} s") from error
        except OSError as error:
            raise RedisConnectionError(f"cannot connect to Redis: {error}") from error

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self._options
        if "path" in options:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(self._timeout), options["path"])
        else:
            _, protocol = await loop.create_connection(
                lambda: _Protocol(self._timeout), options.get("host", "localhost"), options.get("port", 6379), ssl=self._tls
            )
        handshake: list[tuple[Any, ...]] = []
        if options.get("password") is not None:
            username = options.get("username")
            handshake.append(("AUTH", username, options["password"]) if username else ("AUTH", options["password"]))
        if options.get("db"):
            handshake.append(("SELECT", options["db"]))
        handshake += [("SCRIPT", "LOAD", script.source) for script in self._scripts]
        for command in handshake:
            reply = loop.create_future()
            protocol.send(_Call(reply, command, loop.time() + self._timeout))
            try:
                await reply
            except BaseException as error:
                protocol.close(RedisConnectionError("Redis refused the connection's handshake"))
                if isinstance(error, ResponseError):  # wrong credentials, no such database, no scripting
                    raise AuthenticationError(f"Redis refused the connection: {error}") from error
                raise
        return protocol

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.close(RedisConnectionError("client closed"))
            self._protocol = None
