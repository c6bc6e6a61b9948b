"""`tollgate serve --workers 2` as a load balancer sees it: during a drain every new connection
is refused (never accepted and then reset), the calls in flight finish, and a worker that dies
is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import Models, Seeder
from test_cli import free_port
from test_replicas import BODY, process_config, wait_healthy


def serve_workers(config: Path, port: int, workers: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=config.parent, text=True,
    )


def worker_pids(supervisor: int) -> set[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    # multiprocessing's resource tracker is a child too.
    return {int(pid) for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()}


def connect_outcome(port: int) -> str:
    """'refused', or what became of a connection the server accepted."""
    try:
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return "refused"
    with connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: tollgate\r\n\r\n")
        try:
            head = connection.recv(64)
        except (ConnectionResetError, TimeoutError) as error:
            return f"accepted, then {type(error).__name__}"
        return "answered" if head.startswith(b"HTTP/1.1") else f"accepted, then closed ({head!r})"


@pytest.fixture
def postgres_redis(backend) -> None:
    if not backend.redis_url:
        pytest.skip("several workers need Redis (tollgate serve refuses them without it)")


async def test_a_drain_refuses_new_connections_on_every_worker_while_the_calls_in_flight_finish(
    postgres_redis: None, app_factory, backend, upstream, tmp_path
) -> None:
    client = await app_factory()
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.chunk_delay_seconds = 0.2
    upstream.behaviour.reply_words = 25  # 5 s: still streaming while the drain is checked
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = serve_workers(process_config(tmp_path / "drain.yml", client, backend), port)
    try:
        await wait_healthy([url])
        received = b""
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", url + "/v1/chat/completions", headers=user.headers,
                                   json={**BODY, "stream": True, "max_tokens": 20}) as response:
                assert response.status_code == 200
                chunks = response.aiter_raw()
                received += await anext(chunks)
                process.send_signal(signal.SIGTERM)
                # The supervisor takes the signal when it next runs: on a loaded machine, later
                # than any fixed pause. Once it has, nothing new may be accepted.
                deadline = time.monotonic() + 3
                while await asyncio.to_thread(connect_outcome, port) != "refused" and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                outcomes = await asyncio.gather(*(asyncio.to_thread(connect_outcome, port) for _ in range(12)))
                async for chunk in chunks:
                    received += chunk
        assert outcomes == ["refused"] * 12
        assert received.rstrip().endswith(b"data: [DONE]")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_worker_that_dies_is_replaced(postgres_redis: None, app_factory, backend, tmp_path) -> None:
    client = await app_factory()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = serve_workers(process_config(tmp_path / "replace.yml", client, backend), port)
    try:
        await wait_healthy([url])
        deadline = time.monotonic() + 30
        while len(before := worker_pids(process.pid)) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)  # past the window where a dying worker counts as a failed start
        killed = min(before)
        os.kill(killed, signal.SIGKILL)
        while len(after := worker_pids(process.pid) - {killed}) < 2:
            assert time.monotonic() < deadline + 10, "the dead worker was not replaced"
            await asyncio.sleep(0.2)
        assert killed not in after
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(6):  # both workers answer
                assert (await http.get(url + "/health")).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr = process.stderr.read() if process.stderr else ""
    assert "died" in stderr
