"""A TCP relay between Tollgate and a real server (PostgreSQL, Redis), which can cut the line.

`cut()` closes every live connection and stops listening, so new connections are refused:
to a client that is exactly what a server restart or an outage looks like. `stall()` keeps
every connection open but forwards nothing: a server that hangs, or a network that drops
packets. `restore()` ends either (a stalled connection is dropped then: its client has given
up on it). The relay only forwards bytes; the server stays real and undisturbed for the
other tests that share it.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the live ones, as a dying server does."""
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._drop_connections()

    async def stall(self) -> None:
        """Forward nothing more, in either direction, while keeping every connection open."""
        self._flowing.clear()

    async def restore(self) -> None:
        if not self._flowing.is_set():
            await self._drop_connections()
            self._flowing.set()
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.cut()
        self._flowing.set()

    async def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        if self._flowing.is_set():  # stalled handlers end once restored
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._relay(client_reader, client_writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.transport.abort()
            self._writers.discard(client_writer)
            return
        self._writers.add(server_writer)
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        finally:
            for writer in (client_writer, server_writer):
                writer.transport.abort()
                self._writers.discard(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        # One side has gone: so does the other, as with a direct connection.
        writer.transport.abort()
