"""Admin reports: usage per day by user, key, organisation, router and tag, top spenders, a search
of the records, CSV of each; calls tagged by a header or the OpenAI body fields; raw records
purged after `usage_retention_days` while the reports over their days still add up.

Reports over days read the daily roll-ups, which the usage writer keeps in the transaction of
the records: every test here compares what a report says with the raw records themselves."""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.usage.records import UsageRecord
from api.usage.retention import purge_old_records
from conftest import ADMIN, AppFactory, Models, Seeder, SeededUser, usage_rows

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "a b"}]}
DAY = 86400


async def _setup(app_factory: AppFactory, upstream, **general: object) -> tuple[httpx.AsyncClient, Models, int]:
    client = await app_factory(**general)
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=3)
    await models.provider(router, upstream.base_url, model_total_params=8, model_active_params=8)
    return client, models, router


async def _get(client: httpx.AsyncClient, path: str, status: int = 200, **headers: str) -> dict:
    response = await client.get(path, headers={**ADMIN, **headers})
    assert response.status_code == status, response.text
    return response.json()


async def _written(client: httpx.AsyncClient, records: list[UsageRecord]) -> None:
    """Records of other days, through the usage writer as a replayed journal would bring them."""
    await client.app.state.context.usage_writer.write_now(records)  # type: ignore[attr-defined]


def _record(user: SeededUser, organization: int | None, router: int, created: datetime, n: int, tag: str | None = None,
            status: int = 200) -> UsageRecord:
    return UsageRecord(
        request_id=f"past-{user.id}-{n}-{created.timestamp()}", endpoint="/v1/chat/completions", method="POST",
        status=status, user_id=user.id, organization_id=organization, key_id=user.key_id, key_name="test",
        router_id=router, model="chat", prompt_tokens=10 + n, completion_tokens=n, total_tokens=10 + 2 * n,
        cost_nanos=1000 * (10 + 4 * n), kwh_min=0.001 * n, kwh_max=0.002 * n, kgco2eq_min=0.0001 * n,
        kgco2eq_max=0.0002 * n, created=created, tag=tag,
    )


def _raw_totals(rows: list, group: str) -> dict:
    """What the raw records add up to, per (day, group): the reference every report must equal."""
    column = {"user": "user_id", "key": "key_id", "organization": "organization_id", "router": "router_id", "tag": "tag"}[group]
    sums: dict = defaultdict(lambda: defaultdict(float))
    for row in rows:
        entry = sums[(row.created.astimezone(UTC).date().isoformat(), getattr(row, column))]
        entry["requests"] += 1
        entry["errors"] += row.status >= 400
        entry["prompt_tokens"] += row.prompt_tokens
        entry["completion_tokens"] += row.completion_tokens
        entry["cost_nanos"] += row.cost_nanos
        entry["kwh_max"] += row.kwh_max
        entry["kgco2eq_min"] += row.kgco2eq_min
    return sums


async def _busy_tenants(client: httpx.AsyncClient, models: Models, router: int) -> tuple[list[SeededUser], list[int]]:
    """Two organisations, three users, calls tagged in every way, refused ones, other days'."""
    seeder = models.seeder
    orgs = [await seeder.organization(), await seeder.organization()]
    alice = await models.user_for(router, organization=orgs[0])
    bob = await models.user_for(router, organization=orgs[0])
    carol = await models.user_for(router, organization=orgs[1])
    second_key = (await client.post("/v1/admin/tokens", json={"name": "ci", "user": alice.id}, headers=ADMIN)).json()["token"]
    calls = [
        (alice.headers, CHAT, {}),
        (alice.headers, CHAT, {"X-Tollgate-Tag": "project-a"}),
        (alice.headers, {**CHAT, "metadata": {"tag": "project-b"}, "user": "end-user-1"}, {}),
        ({"Authorization": f"Bearer {second_key}"}, CHAT, {"X-Tollgate-Tag": "ci"}),
        (bob.headers, {**CHAT, "metadata": {"tag": "project-b"}}, {"X-Tollgate-Tag": "project-a"}),  # the header wins
        (bob.headers, {"model": "nope", "messages": CHAT["messages"]}, {"X-Tollgate-Tag": "project-a"}),  # 404, recorded
        (carol.headers, CHAT, {}),
        (ADMIN, CHAT, {"X-Tollgate-Tag": "ci"}),  # the master key: no user, no key, no organisation
    ]
    for headers, body, extra in calls:
        response = await client.post("/v1/chat/completions", json=body, headers={**headers, **extra})
        assert response.status_code in (200, 404), response.text
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    await _written(client, [
        _record(alice, orgs[0], router, today - timedelta(days=1), 1, tag="project-a"),
        _record(alice, orgs[0], router, today - timedelta(days=1, hours=11, minutes=59), 2),
        _record(carol, orgs[1], router, today - timedelta(days=3), 3, tag="ci", status=429),
    ])
    return [alice, bob, carol], orgs


@pytest.mark.parametrize("group", ["user", "key", "organization", "router", "tag"])
async def test_each_report_adds_up_to_the_raw_records(app_factory: AppFactory, upstream, group: str) -> None:
    client, models, router = await _setup(app_factory, upstream)
    await _busy_tenants(client, models, router)
    rows = await usage_rows(client)
    assert len(rows) == 11
    expected = _raw_totals(rows, group)

    report = await _get(client, f"/v1/admin/usage?group_by={group}&start_time={int(time.time()) - 5 * DAY}")
    assert report["total"] == len(report["data"]) == len(expected)
    for item in report["data"]:
        sums = expected[(item["day"], item["tag"] if group == "tag" else item["id"])]
        assert item["object"] == "usage.total" and item["group"] == group
        assert (item["requests"], item["errors"], item["prompt_tokens"], item["completion_tokens"]) == (
            sums["requests"], sums["errors"], sums["prompt_tokens"], sums["completion_tokens"])
        assert item["total_tokens"] == item["prompt_tokens"] + item["completion_tokens"]
        assert round(item["cost"] * 1e9) == sums["cost_nanos"]
        assert item["kWh"]["max"] == pytest.approx(sums["kwh_max"]) and item["kgCO2eq"]["min"] == pytest.approx(sums["kgco2eq_min"])
    assert [item["day"] for item in report["data"]] == sorted(item["day"] for item in report["data"])

    # The top list over the same days: each group's sums over them, biggest spender first.
    top = await _get(client, f"/v1/admin/usage/top?group_by={group}&start_time={int(time.time()) - 5 * DAY}&limit=100")
    by_group: dict = defaultdict(lambda: defaultdict(float))
    for (_, key), sums in expected.items():
        for name, value in sums.items():
            by_group[key][name] += value
    assert len(top["data"]) == len(by_group)
    for item in top["data"]:
        sums = by_group[item["tag"] if group == "tag" else item["id"]]
        assert (item["requests"], round(item["cost"] * 1e9)) == (sums["requests"], sums["cost_nanos"])
    assert [item["cost"] for item in top["data"]] == sorted((item["cost"] for item in top["data"]), reverse=True)


async def test_reports_filter_by_tag_and_group_and_name_the_top_spenders(app_factory: AppFactory, upstream) -> None:
    client, models, router = await _setup(app_factory, upstream)
    (alice, bob, carol), orgs = await _busy_tenants(client, models, router)
    rows = await usage_rows(client)
    since = int(time.time()) - 5 * DAY

    project_a = await _get(client, f"/v1/admin/usage?group_by=user&tag=project-a&start_time={since}")
    assert sorted((item["id"], item["requests"]) for item in project_a["data"]) == [(alice.id, 1), (alice.id, 1), (bob.id, 2)]
    assert sum(item["requests"] for item in project_a["data"]) == sum(1 for row in rows if row.tag == "project-a")
    alice_only = await _get(client, f"/v1/admin/usage?group_by=user&id={alice.id}&start_time={since}")
    assert {item["id"] for item in alice_only["data"]} == {alice.id}
    assert sum(item["requests"] for item in alice_only["data"]) == sum(1 for row in rows if row.user_id == alice.id)

    top_users = await _get(client, f"/v1/admin/usage/top?group_by=user&order_by=requests&start_time={since}&limit=2")
    assert [(item["id"], item["name"], item["requests"]) for item in top_users["data"]] == [
        (alice.id, alice.email, 6), (bob.id, bob.email, 2)]
    top_orgs = await _get(client, f"/v1/admin/usage/top?group_by=organization&tag=ci&start_time={since}")
    assert sorted((item["id"] or 0, item["requests"]) for item in top_orgs["data"]) == [(0, 1), (orgs[0], 1), (orgs[1], 1)]
    top_keys = await _get(client, f"/v1/admin/usage/top?group_by=key&start_time={since}")
    assert {item["name"] for item in top_keys["data"]} == {"test", "ci", None}

    await _get(client, "/v1/admin/usage?group_by=tag&id=1", status=400)
    await _get(client, "/v1/admin/usage?tag=not%20a%20tag", status=422)
    await _get(client, "/v1/admin/usage?start_time=2000&end_time=1000", status=400)
    await _get(client, "/v1/admin/usage/top?order_by=carbon", status=422)
    assert (await client.get("/v1/admin/usage/top", headers=alice.headers)).status_code == 403


async def test_a_call_is_tagged_by_its_header_or_its_metadata_and_keeps_its_end_user(app_factory: AppFactory, upstream) -> None:
    client, models, router = await _setup(app_factory, upstream)
    user = await models.user_for(router)
    sent = [
        ({**CHAT, "user": "student-42", "metadata": {"tag": "course-1", "other": "kept"}}, {}),
        ({**CHAT, "metadata": {"tag": "course-1"}}, {"X-Tollgate-Tag": "team:physics/lab-2"}),
    ]
    for body, headers in sent:
        response = await client.post("/v1/chat/completions", json=body, headers={**user.headers, **headers})
        assert response.status_code == 200, response.text
    embeddings = await client.post("/v1/embeddings", json={"model": "chat", "input": "x"},
                                   headers={**user.headers, "X-Tollgate-Tag": "emb"})
    assert embeddings.status_code == 400  # a chat model cannot embed: refused, and recorded with its tag
    assert upstream.received[0].body["metadata"] == {"tag": "course-1", "other": "kept"}  # sent on as it came

    refused = [
        ({**CHAT}, {"X-Tollgate-Tag": "has spaces"}, 400),
        ({**CHAT}, {"X-Tollgate-Tag": "x" * 65}, 400),
        ({**CHAT, "metadata": {"tag": "bad tag!"}}, {}, 422),
        ({**CHAT, "metadata": {"tag": 5}}, {}, 422),
        ({**CHAT, "user": "u" * 256}, {}, 422),
    ]
    for body, headers, status in refused:
        response = await client.post("/v1/chat/completions", json=body, headers={**user.headers, **headers})
        assert response.status_code == status, (headers, body, response.text)
        assert "detail" in response.json()

    rows = await usage_rows(client)
    assert [(row.tag, row.end_user) for row in rows[:3]] == [("course-1", "student-42"), ("team:physics/lab-2", None), ("emb", None)]
    found = await _get(client, "/v1/admin/usage/records?end_user=student-42")
    assert [item["tag"] for item in found["data"]] == ["course-1"] and found["total"] == 1
    by_tag = await _get(client, "/v1/admin/usage?group_by=tag")
    assert sorted((item["tag"], item["requests"]) for item in by_tag["data"]) == [("course-1", 1), ("emb", 1), ("team:physics/lab-2", 1)]


async def test_the_search_of_records_filters_and_pages_newest_first(app_factory: AppFactory, upstream) -> None:
    client, models, router = await _setup(app_factory, upstream)
    (alice, bob, carol), orgs = await _busy_tenants(client, models, router)
    rows = await usage_rows(client)

    everything = await _get(client, "/v1/admin/usage/records?limit=100")
    assert everything["total"] == len(everything["data"]) == len(rows)
    assert [item["id"] for item in everything["data"]] == [row.id for row in sorted(rows, key=lambda r: (r.created, r.id), reverse=True)]
    first = everything["data"][-1]
    assert first["object"] == "usage.record" and first["status"] == 429 and first["tag"] == "ci" and first["user"] == carol.id
    assert first["usage"]["prompt_tokens"] == 13 and first["usage"]["cost"] == pytest.approx(22e-6)

    pages = [await _get(client, f"/v1/admin/usage/records?offset={offset}&limit=4") for offset in (0, 4, 8)]
    assert [item["id"] for page in pages for item in page["data"]] == [item["id"] for item in everything["data"]]
    assert {page["total"] for page in pages} == {len(rows)}

    searches = {
        f"user={alice.id}": lambda r: r.user_id == alice.id,
        f"key={alice.key_id}": lambda r: r.key_id == alice.key_id,
        f"organization={orgs[0]}": lambda r: r.organization_id == orgs[0],
        "model=nope": lambda r: r.model == "nope",
        "status=404": lambda r: r.status == 404,
        "tag=project-a": lambda r: r.tag == "project-a",
        f"user={bob.id}&status=200": lambda r: r.user_id == bob.id and r.status == 200,
        f"start_time={int(time.time()) - 2 * DAY}&end_time={int(time.time()) - DAY // 2}": lambda r: r.created.date() < datetime.now(UTC).date()
        and r.created > datetime.now(UTC) - timedelta(days=2),
    }
    for query, matches in searches.items():
        found = await _get(client, f"/v1/admin/usage/records?limit=100&{query}")
        assert sorted(item["id"] for item in found["data"]) == sorted(row.id for row in rows if matches(row)), query
        assert found["total"] == len(found["data"]), query

    for bad in ("limit=0", "limit=101", "status=42", "user=0", "offset=-1", "tag=a%20b", "start_time=-5"):
        await _get(client, f"/v1/admin/usage/records?{bad}", status=422)
    assert (await client.get("/v1/admin/usage/records", headers=alice.headers)).status_code == 403


async def test_every_report_exports_as_csv(app_factory: AppFactory, upstream) -> None:
    client, models, router = await _setup(app_factory, upstream)
    user = await models.user_for(router)
    body = {**CHAT, "user": "=HYPERLINK(1)"}  # a spreadsheet must not run it as a formula
    assert (await client.post("/v1/chat/completions", json=body, headers={**user.headers, "X-Tollgate-Tag": "t1"})).status_code == 200
    await usage_rows(client)

    for path in ("/v1/admin/usage?group_by=tag", "/v1/admin/usage/top?group_by=user", "/v1/admin/usage/records"):
        as_json = await _get(client, path)
        for extra, headers in (("&format=csv" if "?" in path else "?format=csv", {}), ("", {"Accept": "text/csv"})):
            response = await client.get(path + extra, headers={**ADMIN, **headers})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/csv")
            assert response.headers["content-disposition"].startswith("attachment; filename=")
            lines = list(csv.DictReader(io.StringIO(response.text)))
            assert len(lines) == len(as_json["data"]) == 1
            assert lines[0]["object"] == as_json["data"][0]["object"]
            assert float(lines[0]["kWh.max" if "records" not in path else "usage.carbon.kWh.max"]) > 0
    record = list(csv.DictReader(io.StringIO((await client.get("/v1/admin/usage/records?format=csv", headers=ADMIN)).text)))[0]
    assert record["end_user"] == "'=HYPERLINK(1)" and record["tag"] == "t1" and record["usage.total_tokens"] == "7"
    mine = await client.get("/v1/me/usage?format=csv", headers=user.headers)
    assert mine.status_code == 200 and list(csv.DictReader(io.StringIO(mine.text)))[0]["usage.total_tokens"] == "7"
    empty = await client.get("/v1/admin/usage/records?format=csv&model=none", headers=ADMIN)
    assert empty.text.startswith("object,id,request_id,created,") and empty.text.count("\r\n") == 1
    await _get(client, "/v1/admin/usage?format=xml", status=422)


async def test_a_batch_written_twice_is_rolled_up_once(app_factory: AppFactory, upstream) -> None:
    """A batch whose commit was lost and is written again (journal replay, retry) must not
    count twice in the roll-ups: they move in the transaction of the records."""
    client, models, router = await _setup(app_factory, upstream)
    user = await models.user_for(router)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    records = [_record(user, None, router, yesterday, n) for n in range(5)]
    await _written(client, records[:3])
    await client.app.state.context.usage_writer._store(records)  # type: ignore[attr-defined]  (three already in)
    rows = await usage_rows(client)
    assert len(rows) == 5
    report = await _get(client, f"/v1/admin/usage?group_by=router&start_time={int(yesterday.timestamp())}")
    assert [(item["requests"], round(item["cost"] * 1e9)) for item in report["data"]] == [(5, sum(r.cost_nanos for r in rows))]


async def test_a_users_count_of_records_reads_whole_days_from_the_rollups(app_factory: AppFactory, upstream) -> None:
    client, models, router = await _setup(app_factory, upstream)
    user = await models.user_for(router)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    moments = [midnight - timedelta(days=d, hours=h) for d in range(0, 6) for h in (1, 7, 23)] + [midnight]
    await _written(client, [_record(user, None, router, moment, n) for n, moment in enumerate(moments)])
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=user.headers)).status_code == 200
    rows = await usage_rows(client)

    def mine(query: str) -> dict:
        return client.get(f"/v1/me/usage{query}", headers=user.headers)

    now = int(time.time())
    windows = [(now - 10 * DAY, now), (int((midnight - timedelta(days=3, hours=5)).timestamp()), int((midnight - timedelta(hours=3)).timestamp())),
               (int(midnight.timestamp()) - DAY, int(midnight.timestamp())), (int(midnight.timestamp()) - 2 * 3600, now)]
    for start, end in windows:
        expected = [row for row in rows if start <= row.created.timestamp() <= end]
        page = (await mine(f"?start_time={start}&end_time={end}&limit=100")).json()
        assert page["total"] == len(page["data"]) == len(expected), (start, end)
    only_chat = (await mine(f"?start_time={now - 10 * DAY}&endpoint=/v1/chat/completions")).json()
    assert only_chat["total"] == len(rows)


async def test_retention_purges_old_records_and_the_reports_over_their_days_still_add_up(app_factory: AppFactory, upstream) -> None:
    client, models, router = await _setup(app_factory, upstream, usage_retention_days=30)
    user = await models.user_for(router)
    old = datetime.now(UTC) - timedelta(days=40)
    await _written(client, [_record(user, None, router, old, n) for n in range(3)] +
                   [_record(user, None, router, old + timedelta(days=15), 7)])
    before = await _get(client, f"/v1/admin/usage?group_by=user&start_time={int(old.timestamp())}")
    assert await _get(client, f"/v1/admin/usage/records?start_time={int(old.timestamp())}") != {"object": "list", "data": [], "total": 0}

    assert await purge_old_records(client.app.state.context.engine, 30, batch=2) == 3  # type: ignore[attr-defined]
    rows = await usage_rows(client)
    assert [row.prompt_tokens for row in rows] == [17]
    assert await _get(client, f"/v1/admin/usage?group_by=user&start_time={int(old.timestamp())}") == before
    found = await _get(client, f"/v1/admin/usage/records?start_time={int(old.timestamp())}")
    assert found["total"] == 1
    page = (await client.get(f"/v1/me/usage?start_time={int(old.timestamp())}", headers=user.headers)).json()
    assert page["total"] == len(page["data"]) == 1  # nothing older than the retention is listed or counted


async def test_replicas_writing_at_once_keep_the_rollups_exact(app_factory: AppFactory, upstream) -> None:
    """Two processes' writers add to the same roll-up rows in the same moments."""
    import asyncio

    first, models, router = await _setup(app_factory, upstream, usage_write_interval_seconds=0.01)
    second = await app_factory(usage_write_interval_seconds=0.01)
    users = [await models.user_for(router) for _ in range(2)]

    async def call(client: httpx.AsyncClient, n: int) -> None:
        headers = {**users[n % 2].headers, "X-Tollgate-Tag": f"t{n % 3}"}
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200

    await asyncio.gather(*(call(client, n) for n in range(30) for client in (first, second)))
    await usage_rows(second)
    rows = await usage_rows(first)
    assert len(rows) == 60
    for group in ("user", "tag", "router"):
        report = await _get(first, f"/v1/admin/usage/top?group_by={group}&limit=100")
        assert sum(item["requests"] for item in report["data"]) == 60
        assert sum(round(item["cost"] * 1e9) for item in report["data"]) == sum(row.cost_nanos for row in rows)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_the_migration_rolls_up_the_records_already_there(tmp_path, database: str) -> None:
    """A deployment upgrading with records in its table gets reports over them at once."""
    import asyncio
    import uuid

    from sqlalchemy import text

    from api.db.engine import build_engine
    from api.db.migrate import upgrade_database
    from api.settings import DatabaseSettings
    from conftest import PG_URL, _create_pg_database, _drop_pg_database

    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'upgrade.db'}"
    elif PG_URL is None:
        pytest.skip("set TOLLGATE_TEST_DATABASE_URL to test the migration on PostgreSQL")
    else:
        name = f"tollgate_upgrade_{uuid.uuid4().hex[:8]}"
        url = await _create_pg_database(PG_URL, name)
    await asyncio.to_thread(upgrade_database, url, "0010")
    engine = build_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as connection:
            for n, (user, day, status) in enumerate([(1, "2026-11-01", 200), (1, "2026-11-01", 500), (2, "2026-11-02", 200), (None, "2026-11-02", 200)]):
                await connection.execute(text(
                    "INSERT INTO usage (request_id, created, user_id, organization_id, key_id, router_id, endpoint, method, status, "
                    "prompt_tokens, completion_tokens, total_tokens, cost_nanos, kwh_min, kwh_max, kgco2eq_min, kgco2eq_max) "
                    f"VALUES ('r{n}', :created, :user, 7, :user, 3, '/v1/chat/completions', 'POST', {status}, "
                    f"{n}, 1, {n + 1}, {1000 * n}, 0.5, 1.0, 0.25, 0.5)"),
                    {"user": user, "created": datetime.fromisoformat(f"{day}T23:59:59+00:00")})
        await asyncio.to_thread(upgrade_database, url)
        async with engine.connect() as connection:
            rows = (await connection.execute(text(
                "SELECT dimension, day, group_id, tag, requests, errors, prompt_tokens, cost_nanos, kwh_max FROM usage_daily "
                "ORDER BY dimension, day, group_id"))).all()
    finally:
        await engine.dispose()
        if database == "postgresql":
            await _drop_pg_database(PG_URL, name)
    rows = [(row[0], str(row[1]), *row[2:]) for row in rows]
    by_user = [tuple(row) for row in rows if row[0] == "user"]
    assert by_user == [("user", "2026-11-01", 1, "", 2, 1, 1, 1000, 2.0), ("user", "2026-11-02", 0, "", 1, 0, 3, 3000, 1.0),
                       ("user", "2026-11-02", 2, "", 1, 0, 2, 2000, 1.0)]
    assert [tuple(row[:5]) for row in rows if row[0] == "organization"] == [
        ("organization", "2026-11-01", 7, "", 2), ("organization", "2026-11-02", 7, "", 2)]
    assert sum(row[4] for row in rows) == 4 * 4  # each record once in each of the four dimensions
