"""What an operator sees: request ids from the client to the logs and the usage records, and
logs as one JSON object per line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import Models, usage_rows
from test_cli import free_port

BODY = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


async def test_request_ids_link_the_answer_to_its_usage_record(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)

    plain = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    # Without an id of its own, the client gets Tollgate's: the usage record's id.
    assert plain.headers["x-request-id"] == plain.headers["x-tollgate-request-id"]

    traced = [await client.post("/v1/chat/completions", json=BODY, headers={**user.headers, "x-request-id": "trace-42"})
              for _ in range(2)]
    assert [r.headers["x-request-id"] for r in traced] == ["trace-42", "trace-42"]
    # The client's id correlates; it cannot make two calls' records collide.
    assert traced[0].headers["x-tollgate-request-id"] != traced[1].headers["x-tollgate-request-id"]

    forged = await client.get("/health", headers={"x-request-id": "a\"b c"})
    assert forged.headers["x-request-id"] != 'a"b c' and len(forged.headers["x-request-id"]) == 32

    rows = {row.request_id for row in await usage_rows(client)}
    assert rows == {r.headers["x-tollgate-request-id"] for r in (plain, *traced)}


def _serve_and_log(tmp_path: Path, settings: str, database: str, requests: Callable[[str], None]) -> str:
    """Start `tollgate serve` with these settings and database lines (YAML), run `requests`
    against its base URL, stop it and give back everything it logged."""
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        f"settings:\n  auth_master_key: observability-test-key\n  log_format: json\n{settings}"
        f"dependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp_path}/t.db\n{database}  qdrant:\n    path: {tmp_path}/q\n"
    )
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        requests(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    return output


def test_serve_logs_one_json_object_per_line_with_the_request_id(tmp_path: Path) -> None:
    def requests(base_url: str) -> None:
        refused = httpx.get(f"{base_url}/v1/models", headers={"x-request-id": "trace-7"})
        assert refused.status_code == 401 and refused.headers["x-request-id"] == "trace-7"

    output = _serve_and_log(tmp_path, "", "", requests)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    access = [line for line in lines if line["logger"] == "uvicorn.access" and line.get("request_id") == "trace-7"]
    assert access and access[0]["path"] == "/v1/models" and access[0]["status"] == 401
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert "observability-test-key" not in output


def test_sql_echo_is_logged_as_json_lines_too(tmp_path: Path) -> None:
    """`database.echo: true` adds SQLAlchemy's statements to the log, through the same JSON
    logging (it printed plain-text lines of its own in the middle of it)."""
    def requests(base_url: str) -> None:
        users = httpx.get(f"{base_url}/v1/admin/users", headers={"Authorization": "Bearer observability-test-key"})
        assert users.status_code == 200

    output = _serve_and_log(tmp_path, "  log_level: WARNING\n", "    echo: true\n", requests)
    lines = [line for line in output.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), [line for line in lines if not line.startswith("{")][:5]
    entries = [json.loads(line) for line in lines]
    # echo is what asks for the statements, whatever log_level says.
    statements = [e for e in entries if e["logger"].startswith("sqlalchemy.engine") and "FROM users" in e["message"]]
    assert statements and all(e["level"] == "INFO" for e in statements), [e["message"] for e in entries][:20]


async def test_metrics_cover_every_component(client, models: Models, seed, upstream, backend) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    await usage_rows(client)  # written
    reader = await seed.user(permissions=["read_metric"])
    text = (await client.get("/metrics", headers=reader.headers)).text

    def value(name: str) -> float:
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))

    assert value("tollgate_db_up") == 1 and value("tollgate_db_probe_seconds") > 0
    assert value("tollgate_usage_records_written") >= 1 and value("tollgate_usage_queue_depth") == 0
    assert 'tollgate_documents{status="ready"} 0.0' in text
    if backend.redis_url is not None:
        assert value("tollgate_redis_up") == 1 and "tollgate_redis_connections" in text
    else:
        assert "tollgate_redis_up " not in text


async def test_a_database_slower_than_the_probe_is_reported_down_and_its_query_left_to_finish(client, seed, backend) -> None:
    import asyncio

    import asyncpg
    import pytest
    from sqlalchemy import make_url

    if backend.redis_url is None:
        pytest.skip("another session's lock on the documents table (PostgreSQL) holds the probe's query")
    reader = await seed.user(permissions=["read_metric"])

    async def db_up() -> str:
        text = (await client.get("/metrics", headers=reader.headers)).text
        return next(line.split()[-1] for line in text.splitlines() if line.startswith("tollgate_db_up "))

    url = make_url(backend.database_url).set(drivername="postgresql")
    other = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
        assert await db_up() == "0.0"  # after the probe's 2 s, not when the lock goes
        assert await db_up() == "0.0"
        # The first scrape's query still waits, not cancelled, and no second one was added.
        waiting = await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
                                       "AND query LIKE '%FROM documents GROUP BY%'")
        assert waiting == 1
        await transaction.rollback()
    finally:
        await other.close()
    for _ in range(100):  # the probe's query ends by itself once the lock is gone
        if not [task for task in asyncio.all_tasks() if task.get_name() == "database-probe"]:
            break
        await asyncio.sleep(0.05)
    assert await db_up() == "1.0"
