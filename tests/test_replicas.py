"""Two real `tollgate serve` processes on one PostgreSQL and one Redis: limits and budgets hold
across them, and every request is recorded once."""

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from api.db.models import User
from conftest import Models, Seeder, usage_rows
from test_cli import free_port

BODY = {"model": "chat", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}


def serve(config: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=config.parent)


async def wait_healthy(urls: list[str]) -> None:
    deadline = time.monotonic() + 40
    async with httpx.AsyncClient() as http:
        for url in urls:
            while True:
                try:
                    if (await http.get(url + "/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{url} did not start"
                await asyncio.sleep(0.2)


async def test_two_processes_share_limits_budgets_and_accounting(app_factory, backend, upstream, tmp_path) -> None:
    if backend.redis_url is None:
        pytest.skip("several processes need PostgreSQL + Redis")
    client = await app_factory()  # empties the tables; used to provision, like an admin would
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    limited = await models.user_for(router, limits={"rpm": 6})
    # Each call reserves 24 µ-units (see test_budgets): room for exactly 10 at once.
    budgeted = await models.user_for(router, budget=0.000245)

    master = client.app.state.context.settings.settings.auth_master_key
    config = tmp_path / "config.yml"
    config.write_text(
        f"settings:\n  auth_master_key: {master}\n  access_log: false\n  log_level: WARNING\n"
        f"dependencies:\n  database:\n    url: {backend.database_url}\n"
        f"  redis:\n    url: {backend.redis_url}\n    key_prefix: \"replicas-{uuid.uuid4().hex}:\"\n"
        f"  qdrant:\n    path: {tmp_path}/qdrant\n"
    )
    ports = [free_port(), free_port()]
    processes = [serve(config, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        await wait_healthy(urls)
        async with httpx.AsyncClient(timeout=30) as http:
            burst = [http.post(url + "/v1/chat/completions", json=BODY, headers=limited.headers) for url in urls * 9]
            statuses = sorted(r.status_code for r in await asyncio.gather(*burst))
            assert statuses == [200] * 6 + [429] * 12

            upstream.behaviour.delay_seconds = 2
            spend = [http.post(url + "/v1/chat/completions", json=BODY, headers=budgeted.headers) for url in urls * 20]
            statuses = [r.status_code for r in await asyncio.gather(*spend)]
            assert statuses.count(200) == 10 and statuses.count(402) == 30
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)  # graceful: each drains its usage queue
        for process in processes:
            process.wait(timeout=30)
    rows = await usage_rows(client)
    assert len(rows) == 18 + 40 and len({r.request_id for r in rows}) == 58
    async with client.app.state.context.session_factory() as session:
        remaining = (await session.execute(select(User.budget_nanos).where(User.id == budgeted.id))).scalar_one()
    assert remaining == 245_000 - 10 * 8_000
