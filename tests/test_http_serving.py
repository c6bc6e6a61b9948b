"""What a client sees of `tollgate serve`'s HTTP server (uvicorn's httptools protocol): heads of
streams are not held back, keep-alive, pipelining."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from conftest import serving

Scope = dict[str, Any]


async def _late_body(scope: Scope, receive: Any, send: Any) -> None:
    """The head at once, the body half a second later."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
    await asyncio.sleep(0.5)
    await send({"type": "http.response.body", "body": b"done"})


async def _chunks(scope: Scope, receive: Any, send: Any) -> None:
    """A chunked body in three parts, the last one alone in its turn."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"one,", "more_body": True})
    await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"two,", "more_body": True})
    await send({"type": "http.response.body", "body": b"three", "more_body": False})


async def _json(scope: Scope, receive: Any, send: Any) -> None:
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def test_a_head_sent_alone_is_not_held_until_the_body() -> None:
    """A stream's status and headers reach the client before its first event."""
    async with serving(_late_body) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        head_after = time.monotonic() - started
        body = await reader.readexactly(4)
        body_after = time.monotonic() - started
        writer.close()
    assert head.startswith(b"HTTP/1.1 200") and body == b"done"
    assert head_after < 0.3 < body_after, (head_after, body_after)


async def test_streamed_and_keep_alive_responses_arrive_whole() -> None:
    async with serving(_chunks) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(3):  # one connection, kept alive
            assert (await http.get("/")).text == "one,two,three"
        # The server closes the connection after the last chunk: nothing it held is lost.
        closing = await http.get("/", headers={"connection": "close"})
        assert closing.text == "one,two,three" and closing.headers["connection"] == "close"


async def test_pipelined_requests_get_their_own_answers_in_order() -> None:
    async with serving(_json) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(f"GET /{n} HTTP/1.1\r\nhost: x\r\n\r\n".encode() for n in range(5)))
        answers = []
        for _ in range(5):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1])
            answers.append(await reader.readexactly(length))
        writer.close()
    assert answers == [f"/{n}".encode() for n in range(5)]

