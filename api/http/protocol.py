"""The HTTP/1.1 protocol Tollgate is served with: uvicorn's httptools protocol, but a response's
status line and headers leave in the same write as its body.

uvicorn writes the head of a response when the app sends `http.response.start`, and the body
in a second write. On a loopback or LAN socket each write is a trip through the TCP stack that
wakes the client: measured here at ~40 µs of the gateway's CPU, about 4% of a limited chat
call (docs/performance.md, 2026-12-01 late). Here a write waits for the next one, or for the
end of the event loop's turn, whichever comes first. A JSON answer's head and body are sent
in one turn and so go out together; a stream's head still leaves at once, without waiting
for the first event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """A transport whose writes of one event-loop turn go out in as few system calls as
    possible: one held back at a time, sent with the next or at the end of the turn."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self._release)
        else:
            self._held = None
            self._transport.writelines((held, data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():  # else the client is gone
            self._transport.write(held)

    def close(self) -> None:
        self._release()  # a transport sends what it was given before it closes
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class TollgateHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
