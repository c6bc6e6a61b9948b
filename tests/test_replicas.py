"""Real `tollgate serve` processes (and a `tollgate worker`) on one PostgreSQL and one Redis:
limits, budgets, key revocation and provider changes hold across them, every request is recorded
once, and a replica killed with SIGKILL loses no record of a call it answered."""

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

from api.db.tables import User
from conftest import Models, Seeder, usage_rows
from test_cli import free_port

BODY = {"model": "chat", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}


def serve(config: Path, port: int, log: Path | None = None) -> subprocess.Popen:
    """`log`: where the server's output goes (else nowhere)."""
    command = [sys.executable, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port)]
    if log is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=config.parent)
    with log.open("w") as output:  # the server has its own copy of the file once started
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=config.parent)


def process_config(path: Path, client: httpx.AsyncClient, backend, settings: str = "", redis_prefix: str | None = None) -> Path:
    """A config for real processes on the test's database and, if the backend has one, Redis
    (all processes given the same prefix share their state, like replicas). `settings` holds
    extra lines of the `settings:` section, indented by two spaces."""
    master = client.app.state.context.settings.settings.auth_master_key  # type: ignore[attr-defined]
    redis = ""
    if backend.redis_url:
        redis = f"  redis:\n    url: {backend.redis_url}\n    key_prefix: \"{redis_prefix or f'procs-{uuid.uuid4().hex}:'}\"\n"
    path.write_text(
        f"settings:\n  auth_master_key: {master}\n  access_log: false\n  log_level: WARNING\n{settings}"
        f"dependencies:\n  database:\n    url: {backend.database_url}\n{redis}  qdrant:\n    path: {path.with_suffix('.qdrant')}\n"
    )
    return path


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

    config = process_config(tmp_path / "config.yml", client, backend)
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


async def test_two_processes_keep_a_burst_within_the_tpm(app_factory, backend, upstream, tmp_path) -> None:
    """40 short calls at once, spread over two processes, against tpm 100: each reserves its
    prompt and its completion bound (the default, sent upstream as max_tokens), so the tokens
    really used in the window stay within the limit."""
    if backend.redis_url is None:
        pytest.skip("several processes need PostgreSQL + Redis")
    client = await app_factory()
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"tpm": 100})
    upstream.behaviour.reply_words = 50  # longer than the bound: the bound must hold
    config = process_config(tmp_path / "config.yml", client, backend, "  gateway:\n    default_max_tokens: 5\n")
    ports = [free_port(), free_port()]
    processes = [serve(config, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    unbounded = {key: value for key, value in BODY.items() if key != "max_tokens"}
    try:
        await wait_healthy(urls)
        async with httpx.AsyncClient(timeout=30) as http:
            burst = [http.post(url + "/v1/chat/completions", json=unbounded, headers=user.headers) for url in urls * 20]
            statuses = sorted(r.status_code for r in await asyncio.gather(*burst))
            assert statuses == [200] * 12 + [429] * 28  # 12 × (3 + 5) = 96
            info = (await http.get(urls[1] + "/v1/me/info", headers=user.headers)).json()
            assert [(c["type"], c["used"]) for c in info["limits_usage"]] == [("tpm", 96)]
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait(timeout=30)
    assert all(received.body["max_tokens"] == 5 for received in upstream.received if received.path.endswith("/completions"))
    assert sum(row.total_tokens for row in await usage_rows(client)) == 96


def start_worker(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "api.cli", "--config", str(config), "worker"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=config.parent)


async def test_replicas_and_a_worker_share_keys_and_providers_and_lose_no_usage_when_killed(
    app_factory, backend, upstream, second_upstream, tmp_path
) -> None:
    if backend.redis_url is None:
        pytest.skip("several processes need PostgreSQL + Redis")
    client = await app_factory()
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, budget=1.0)

    master = client.app.state.context.settings.settings.auth_master_key
    # Records are written every 30 s: when a replica is killed, none of its calls is in the
    # database yet, and only its journal can bring them there.
    config = process_config(
        tmp_path / "config.yml", client, backend,
        f"  models_refresh_seconds: 0.5\n  usage_journal_path: {tmp_path}/journal\n  usage_write_interval_seconds: 30\n",
    )
    ports = [free_port(), free_port()]
    first, second = (f"http://127.0.0.1:{port}" for port in ports)
    replicas = [serve(config, port) for port in ports]
    worker = start_worker(config, tmp_path / "worker.log")
    try:
        await wait_healthy([first, second])
        async with httpx.AsyncClient(timeout=30) as http:
            # A provider added through the first replica is used by the second.
            added = await http.post(first + "/v1/admin/providers", headers={"Authorization": f"Bearer {master}"},
                                    json={"router": router, "type": "vllm", "url": second_upstream.base_url, "model_name": "fake-chat"})
            assert added.status_code == 201, added.text
            deadline = time.monotonic() + 5
            while not any(r.path == "/v1/chat/completions" for r in second_upstream.received):
                assert time.monotonic() < deadline, "the second replica never used the new provider"
                assert (await http.post(second + "/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200

            # A key deleted through the first replica is refused by the second within 1 s.
            spare = (await http.post(first + "/v1/me/keys", json={"name": "spare"}, headers=user.headers)).json()
            spare_headers = {"Authorization": f"Bearer {spare['token']}"}
            assert (await http.post(second + "/v1/chat/completions", json=BODY, headers=spare_headers)).status_code == 200
            assert (await http.delete(f"{first}/v1/me/keys/{spare['id']}", headers=user.headers)).status_code == 204
            deleted_at = time.monotonic()
            while (await http.post(second + "/v1/chat/completions", json=BODY, headers=spare_headers)).status_code != 401:
                await asyncio.sleep(0.05)
            assert time.monotonic() - deleted_at < 1.5

            # The second replica is killed (SIGKILL) in the middle of traffic.
            answered: list[str] = []

            async def caller(stream: bool) -> None:
                while True:
                    try:
                        response = await http.post(second + "/v1/chat/completions", json={**BODY, "stream": stream},
                                                   headers=user.headers)
                    except httpx.TransportError:
                        return  # the replica is gone
                    # A stream is answered once its [DONE] arrived.
                    if response.status_code == 200 and (not stream or response.text.rstrip().endswith("data: [DONE]")):
                        answered.append(response.headers["x-tollgate-request-id"])

            callers = [asyncio.create_task(caller(stream=n % 2 == 1)) for n in range(8)]
            while len(answered) < 40:
                await asyncio.sleep(0.05)
            replicas[1].send_signal(signal.SIGKILL)
            replicas[1].wait(timeout=10)
            await asyncio.gather(*callers)

        # The worker finds the dead replica's journal and writes what it answered, once.
        deadline = time.monotonic() + 15
        while True:
            written = {r.request_id for r in await usage_rows(client)}
            if set(answered) <= written:
                break
            assert time.monotonic() < deadline, f"{len(set(answered) - written)} answered calls were never recorded"
            await asyncio.sleep(0.2)
        assert "replaying" in (tmp_path / "worker.log").read_text()
    finally:
        for process in (replicas[0], worker):
            process.send_signal(signal.SIGINT)
        for process in (*replicas, worker):
            if process.poll() is None:
                process.wait(timeout=30)
    rows = await usage_rows(client)
    assert len(rows) == len({r.request_id for r in rows})
    async with client.app.state.context.session_factory() as session:
        remaining = (await session.execute(select(User.budget_nanos).where(User.id == user.id))).scalar_one()
    # Each recorded cost left the budget exactly once, replayed records included.
    assert remaining == 1_000_000_000 - sum(r.cost_nanos for r in rows if r.user_id == user.id)


async def test_graceful_shutdown_finishes_streams_up_to_a_deadline_and_accounts_for_the_rest(
    app_factory, backend, upstream, tmp_path
) -> None:
    client = await app_factory()
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, budget=1.0)
    redis_prefix = f"shutdown-{uuid.uuid4().hex}:"  # both processes', so their budget holds can be read after
    stream_body = {**BODY, "stream": True, "max_tokens": 50}
    upstream.behaviour.chunk_delay_seconds = 0.25

    async def stream_then_stop(grace: float, words: int) -> tuple[bytes, float]:
        config = process_config(
            tmp_path / f"grace-{grace}.yml", client, backend,
            f"  shutdown_grace_seconds: {grace}\n  usage_journal_path: {tmp_path}/journal-{grace}\n", redis_prefix,
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / f"grace-{grace}.log"
        process = serve(config, port, log)
        upstream.behaviour.reply_words = words
        try:
            await wait_healthy([url])
            received = b""
            async with httpx.AsyncClient(timeout=30) as http:
                async with http.stream("POST", url + "/v1/chat/completions", json=stream_body, headers=user.headers) as response:
                    assert response.status_code == 200
                    chunks = response.aiter_raw()
                    received += await anext(chunks)
                    process.send_signal(signal.SIGTERM)
                    stopped_at = time.monotonic()
                    await asyncio.sleep(0.3)
                    with pytest.raises(httpx.ConnectError):  # no new connections once stopping
                        await http.get(url + "/health")
                    try:
                        async for chunk in chunks:
                            received += chunk
                    except httpx.RemoteProtocolError:
                        pass  # cut at the deadline
            try:
                process.wait(timeout=grace + 20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server did not exit {grace + 20}s after the stream; its log:\n{log.read_text()[-4000:]}")
            return received, time.monotonic() - stopped_at
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    # Within the deadline, the stream in flight ends normally.
    finished, _ = await stream_then_stop(grace=10, words=6)
    assert finished.rstrip().endswith(b"data: [DONE]")
    # Past it, the stream is cut and the process exits.
    cut, took = await stream_then_stop(grace=0.5, words=60)
    assert b"[DONE]" not in cut and took < 10

    rows = sorted(await usage_rows(client), key=lambda r: r.id)
    assert [r.status for r in rows] == [200, 499]
    assert rows[0].completion_tokens == 6 and 0 < rows[1].completion_tokens < 60
    async with client.app.state.context.session_factory() as session:
        remaining = (await session.execute(select(User.budget_nanos).where(User.id == user.id))).scalar_one()
    assert remaining == 1_000_000_000 - sum(r.cost_nanos for r in rows)
    if backend.redis_url:  # both budget holds were given back, the cut stream's too
        from redis.asyncio import Redis

        redis = Redis.from_url(backend.redis_url)
        try:
            assert int(await redis.get(f"{redis_prefix}budget:{user.id}:reserved") or 0) == 0
            assert int(await redis.get(f"{redis_prefix}budget:{user.id}:balance")) == remaining
        finally:
            await redis.aclose()


def start_ingestion_worker(config: Path, log: Path) -> subprocess.Popen:
    # `tollgate worker` itself refuses a local Qdrant folder (the API processes of a real
    # deployment would open it too); here the API never opens it, so the worker's own loop is
    # started directly, in a process of its own, on a folder of its own.
    code = ("import asyncio, sys; from pathlib import Path; from api.settings import load_settings; "
            "from workers.ingestion import run_worker; asyncio.run(run_worker(load_settings(Path(sys.argv[1])), 1))")
    return subprocess.Popen([sys.executable, "-c", code, str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            cwd=config.parent)


async def test_a_worker_killed_mid_ingestion_loses_no_document_and_duplicates_no_chunk(app_factory, backend, tmp_path) -> None:
    from fakes.upstream import Behaviour, FakeUpstream
    from pdfs import make_pdf

    from api.rag.vectors import VectorStore
    from api.settings import QdrantSettings

    embeddings = FakeUpstream(behaviour=Behaviour(embedding_dimensions=64))
    await embeddings.start()
    rag = {"vector_store_model": "embeddings", "ingestion_concurrency": 0, "embedding_batch_size": 1, "job_lease_seconds": 5}
    client = await app_factory(rag=rag)  # an API process that leaves ingestion to workers
    models = Models(client, Seeder(client))
    router = await models.router("embeddings", type="text-embeddings-inference")
    await models.provider(router, embeddings.base_url, model_name="fake-embed")
    user = await models.user_for(router)
    collection = (await client.post("/v1/collections", json={"name": "c"}, headers=user.headers)).json()["id"]
    pages = [f"Page {n} is about topic number {n}." for n in range(1, 13)]
    uploaded = await client.post("/v1/documents", headers=user.headers, files={"file": ("twelve.pdf", make_pdf(pages))},
                                 data={"collection_id": str(collection)})
    assert uploaded.status_code == 201, uploaded.text
    document = uploaded.json()["id"]

    config = process_config(
        tmp_path / "worker.yml", client, backend,
        f"  usage_journal_path: {tmp_path}/journal\n"
        "  rag:\n    vector_store_model: embeddings\n    embedding_batch_size: 1\n    job_lease_seconds: 5\n",
    )
    embeddings.behaviour.delay_seconds = 0.3  # twelve calls: about 4 s of ingestion
    first = start_ingestion_worker(config, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 60
        while sum(r.path == "/v1/embeddings" for r in embeddings.received) < 4:
            assert time.monotonic() < deadline and first.poll() is None, (tmp_path / "first.log").read_text()
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # mid-ingestion: no clean-up of any kind
        first.wait(timeout=10)
        info = (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()
        assert info["status"] == "processing" and info["progress"] < 1

        embeddings.behaviour.delay_seconds = 0
        second = start_ingestion_worker(config, tmp_path / "second.log")
        try:
            deadline = time.monotonic() + 60
            while (info := (await client.get(f"/v1/documents/{document}", headers=user.headers)).json())["status"] == "processing":
                assert time.monotonic() < deadline and second.poll() is None, (tmp_path / "second.log").read_text()
                await asyncio.sleep(0.2)
        finally:
            second.send_signal(signal.SIGINT)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        await embeddings.stop()
    assert info["status"] == "ready" and info["chunks"] == 12
    # The worker's Qdrant folder holds each chunk once: nothing of the killed attempt is left.
    vectors = VectorStore(QdrantSettings(path=str(config.with_suffix(".qdrant"))), client.app.state.context.settings.settings.rag.qdrant_collection)
    try:
        stored = await vectors.chunks(user.id, document, 0, 100)
        assert sorted(c.content for c in stored) == sorted(pages) and await vectors.count(document_id=document) == 12
    finally:
        await vectors.close()


async def test_a_stream_cut_by_the_death_of_its_process_is_recorded_and_charged(
    app_factory, backend, upstream, tmp_path
) -> None:
    """Its client got a 200 and some chunks: the start journaled before them is replayed as a
    record of the call, cut, charged for its prompt."""
    client = await app_factory()
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=1000, cost_completion_tokens=1000)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, budget=1.0)
    upstream.behaviour.chunk_delay_seconds = 0.25
    upstream.behaviour.reply_words = 40
    config = process_config(tmp_path / "crash.yml", client, backend, f"  usage_journal_path: {tmp_path}/journal\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = serve(config, port)
    try:
        await wait_healthy([url])
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", url + "/v1/chat/completions", headers=user.headers,
                                   json={**BODY, "stream": True, "max_tokens": 50}) as response:
                assert response.status_code == 200
                request_id = response.headers["x-tollgate-request-id"]
                chunks = response.aiter_raw()
                await anext(chunks)
                await anext(chunks)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
        assert [r for r in await usage_rows(client) if r.request_id == request_id] == []
        # The next process on the folder replays it at start.
        process = serve(config, port)
        await wait_healthy([url])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    [row] = [r for r in await usage_rows(client) if r.request_id == request_id]
    assert (row.status, row.completion_tokens) == (499, 0) and row.prompt_tokens > 0
    assert row.cost_nanos == row.prompt_tokens * 1000 * 1000
    async with client.app.state.context.session_factory() as session:
        remaining = (await session.execute(select(User.budget_nanos).where(User.id == user.id))).scalar_one()
    assert remaining == 1_000_000_000 - row.cost_nanos
