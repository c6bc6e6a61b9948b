"""What a client sees of `tollgate serve`'s HTTP server (uvicorn's httptools protocol) and what
serving does to the process: heads of streams are not held back, keep-alive, pipelining, and the
collector tuned for the served process only."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.http.serving import GC_THRESHOLDS, CollectorTunedOnStartup
from conftest import make_settings, serving

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


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, whatever a test did to it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def _start(app: Any) -> list[str]:
    """Run the app's lifespan startup (as a server does) and return what it answered."""
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    answers: list[str] = []
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        answers.append(message["type"])
        started.set()

    running = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, send))
    await asyncio.wait_for(started.wait(), timeout=30)
    await messages.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(running, timeout=30)
    return answers


async def test_an_app_built_by_the_factory_leaves_the_collector_alone(collector: None, backend, tmp_path) -> None:
    """A test or a program embedding Tollgate keeps its own collector settings."""
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()
    app = create_app(make_settings(backend, f"tollgate-test:{uuid.uuid4().hex}:", qdrant_path=str(tmp_path)))
    assert await _start(app) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == frozen


async def test_the_served_app_tunes_the_collector_once_started(collector: None, backend, tmp_path) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    app = create_app(make_settings(backend, f"tollgate-test:{uuid.uuid4().hex}:", qdrant_path=str(tmp_path)))
    assert await _start(CollectorTunedOnStartup(app)) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's passes
