"""Benchmark: admin usage reports and a user's first page of `/v1/me/usage` with millions of
usage records on PostgreSQL.

    .venv/bin/python bench/usage_reports.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench_reports \\
        --generate 10000000 [--runs 50] [--drop]

`--generate N` (re)creates the database, migrates it to 0010 (the schema before the roll-ups),
inserts N records with one SQL statement per million (generate_series: spread evenly over the
last 60 days, 1,000 users of 50 organisations, one key each, 10 routers, one call in fifty
refused), then migrates to the code's head: from 0011 on, that migration fills the daily
roll-ups from the records, as it does for a deployment upgrading. Without `--generate` the
database is reused as it is (migrated to the head of the code that runs the bench first).

To measure the code before the roll-ups on the same records, run this script from a checkout
of it (`git archive <commit> | tar -x -C /tmp/before`, copy this file into its bench/) with
`--generate`, then from this checkout without it: the second run migrates the database and
measures again.

The app runs in this process (the HTTP stack, an ASGI client, no network), its garbage
collector tuned as `tollgate serve` tunes it. Measured, each
`--runs` times after two warm-up calls: `GET /v1/admin/usage?group_by=organization` over the
last 30 days, and the first page of `GET /v1/me/usage` (10 records) of one of the 1,000 users
(~5,000 records in those 30 days). Prints p50 and p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/usage_reports.py` as well as `python -m bench.usage_reports`

from api.db.migrate import upgrade_database  # noqa: E402
from api.http.app import create_app  # noqa: E402
from api.http.serving import tune_collector  # noqa: E402
from api.settings import Settings  # noqa: E402

MASTER_KEY = "bench-master-key"
USERS = 1000
ORGANIZATIONS = 50
ROUTERS = 10
DAYS = 60
CHUNK = 1_000_000

# One million records per statement; $1 = first index, $2 = last, $3 = the first user's id,
# $4 = the first organisation's id, $5 = the total count (spreads them over DAYS up to now).
INSERT_RECORDS = f"""
INSERT INTO usage (request_id, created, user_id, organization_id, key_id, key_name, router_id, provider_id, model,
                   endpoint, method, status, prompt_tokens, completion_tokens, total_tokens, cost_nanos,
                   kwh_min, kwh_max, kgco2eq_min, kgco2eq_max, latency_ms, ttft_ms)
SELECT 'bench-' || i,
       now() - make_interval(secs => ({DAYS} * 86400.0) * ($5::bigint - i) / $5::bigint),
       $3::int + i % {USERS}, $4::int + (i % {USERS}) % {ORGANIZATIONS}, $3::int + i % {USERS}, 'bench',
       1 + i % {ROUTERS}, 1 + i % {ROUTERS}, 'model-' || (1 + i % {ROUTERS}),
       '/v1/chat/completions', 'POST', CASE WHEN i % 50 = 0 THEN 429 ELSE 200 END,
       p, c, p + c, p * 1000 + c * 3000,
       c * 1e-6, c * 2e-6, c * 3e-7, c * 6e-7, 200 + i % 800, 50 + i % 100
FROM generate_series($1::bigint, $2::bigint) AS i,
     LATERAL (SELECT (10 + i % 500)::bigint AS p, CASE WHEN i % 50 = 0 THEN 0 ELSE (i % 300)::bigint END AS c) AS t
"""


def _connect_args(url: str) -> dict[str, object]:
    parsed = make_url(url)
    return {"host": parsed.host, "port": parsed.port or 5432, "user": parsed.username, "password": parsed.password}


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(database="postgres", **_connect_args(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _settings(url: str, qdrant_path: str) -> Settings:
    return Settings(
        settings={"auth_master_key": MASTER_KEY, "usage_journal_path": None, "access_log": False, "log_level": "WARNING",
                  "gateway": {"health_check_seconds": 0}},
        dependencies={"database": {"url": url}, "qdrant": {"path": qdrant_path}},
    )


async def _seed(client: httpx.AsyncClient) -> tuple[int, int, str]:
    """The measured user (created through the API, so its key authenticates): ids and key."""
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}

    async def post(path: str, body: dict) -> dict:
        response = await client.post(path, json=body, headers=admin)
        response.raise_for_status()
        return response.json()

    organization = (await post("/v1/admin/organizations", {"name": f"bench-{time.time_ns()}"}))["id"]
    role = (await post("/v1/admin/roles", {"name": f"bench-{time.time_ns()}", "permissions": [], "limits": []}))["id"]
    user = (await post("/v1/admin/users", {"email": f"bench-{time.time_ns()}@example.com", "password": "a long enough password",
                                          "role": role, "organization": organization}))["id"]
    key = (await post("/v1/admin/tokens", {"name": "bench", "user": user}))["token"]
    return user, organization, key


async def _generate(url: str, records: int, user: int, organization: int) -> None:
    parsed = make_url(url)
    connection = await asyncpg.connect(database=parsed.database, **_connect_args(url))
    try:
        for first in range(0, records, CHUNK):
            last = min(records, first + CHUNK) - 1
            started = time.perf_counter()
            await connection.execute(INSERT_RECORDS, first, last, user, organization, records)
            print(f"  records {first:>10,}..{last:>10,} in {time.perf_counter() - started:.1f}s", flush=True)
        started = time.perf_counter()
        await connection.execute("VACUUM ANALYZE usage")
        print(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f}s", flush=True)
    finally:
        await connection.close()


async def _measure(client: httpx.AsyncClient, path: str, headers: dict[str, str], runs: int) -> tuple[float, float, dict]:
    timings: list[float] = []
    body: dict = {}
    for n in range(runs + 2):
        started = time.perf_counter()
        response = await client.get(path, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        body = response.json()
        if n >= 2:  # warm-up: the first calls fill caches (the key's, the connection pool)
            timings.append(elapsed)
    timings.sort()
    return statistics.median(timings), timings[max(0, round(0.95 * len(timings)) - 1)], body


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--generate", type=int, default=0, help="records to generate (0: reuse the database)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    args = parser.parse_args()
    url = args.database_url
    name = make_url(url).database
    if args.generate:
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _admin(url, f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(upgrade_database, url, "0010")
    else:
        started = time.perf_counter()
        await asyncio.to_thread(upgrade_database, url)
        print(f"migrated to head in {time.perf_counter() - started:.1f}s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-") as qdrant_path:
        app = create_app(_settings(url, qdrant_path))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
                if args.generate:
                    user, organization, key = await _seed(client)
                    Path(ROOT / "data").mkdir(exist_ok=True)
                    (ROOT / "data" / f"{name}.key").write_text(f"{user} {organization} {key}\n")
                else:
                    user, organization, key = (ROOT / "data" / f"{name}.key").read_text().split()
        if args.generate:
            print(f"generating {args.generate:,} records", flush=True)
            await _generate(url, args.generate, int(user), int(organization))
            started = time.perf_counter()
            await asyncio.to_thread(upgrade_database, url)
            print(f"migrated to head in {time.perf_counter() - started:.1f}s", flush=True)
        app = create_app(_settings(url, qdrant_path))
        async with app.router.lifespan_context(app):
            tune_collector()  # as `tollgate serve` does once its app has started
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
                now = int(time.time())
                report = f"/v1/admin/usage?group_by=organization&start_time={now - 30 * 86400}&end_time={now}"
                p50, p95, body = await _measure(client, report, {"Authorization": f"Bearer {MASTER_KEY}"}, args.runs)
                requests = sum(row["requests"] for row in body["data"])
                print(f"| admin usage by organisation, 30 days | {p50:.1f} | {p95:.1f} | {len(body['data'])} rows, "
                      f"{requests:,} requests |")
                p50, p95, body = await _measure(client, "/v1/me/usage", {"Authorization": f"Bearer {key}"}, args.runs)
                print(f"| a user's /v1/me/usage, first page | {p50:.1f} | {p95:.1f} | total {body['total']:,} |")
                # The other reports, where the code has them (not before the roll-ups).
                others = {
                    "top 10 users by cost, 30 days": f"/v1/admin/usage/top?group_by=user&start_time={now - 30 * 86400}",
                    "usage by user, 30 days": f"/v1/admin/usage?group_by=user&start_time={now - 30 * 86400}",
                    "records, first page, no filter": "/v1/admin/usage/records",
                    "records of one key, first page": f"/v1/admin/usage/records?key={int(user) + 1}",
                    "records of one model with status 429, first page": "/v1/admin/usage/records?model=model-1&status=429",
                }
                admin = {"Authorization": f"Bearer {MASTER_KEY}"}
                if (await client.get(others["records, first page, no filter"], headers=admin)).status_code == 200:
                    for label, path in others.items():
                        p50, p95, body = await _measure(client, path, admin, args.runs)
                        print(f"| {label} | {p50:.1f} | {p95:.1f} | {len(body['data'])} rows, total {body['total']:,} |")
    if args.drop:
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
