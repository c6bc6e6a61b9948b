"""Benchmark: the usage writer's CPU per batch, in-process, on an empty database.

    .venv/bin/python bench/usage_writer.py --database-url postgresql+asyncpg://…/empty_db [--code CHECKOUT]

`--code` measures another checkout's writer (its `api` package first on the path), to compare
two commits on two empty databases. Prints the CPU time of writing 70-record batches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

BATCH, BATCHES = 70, 40


async def measure(database_url: str) -> float:
    from api.db.engine import build_engine
    from api.db.migrate import upgrade_database
    from api.settings import DatabaseSettings
    from api.usage.writer import UsageWriter

    try:
        from api.usage.records import UsageRecord
    except ImportError:  # checkouts from before the records had a module of their own
        from api.usage.writer import UsageRecord  # type: ignore[attr-defined,no-redef]

    await asyncio.to_thread(upgrade_database, database_url)
    engine = build_engine(DatabaseSettings(url=database_url))
    writer = UsageWriter(engine)
    now = datetime.now(UTC)

    def batch() -> list[UsageRecord]:
        return [UsageRecord(request_id=uuid.uuid4().hex, endpoint="/v1/chat/completions", method="POST", status=200,
                            user_id=None, organization_id=None, key_id=None, key_name="bench", router_id=1, model="chat",
                            prompt_tokens=5, completion_tokens=5, total_tokens=10, cost_nanos=10, latency_ms=1, created=now)
                for _ in range(BATCH)]

    await writer.write_now(batch())  # warm-up: connection, statement cache
    cpu = 0.0
    for _ in range(BATCHES):
        records = batch()
        started = time.process_time()
        await writer.write_now(records)
        cpu += time.process_time() - started
    await engine.dispose()
    return cpu / BATCHES * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True, help="an empty database")
    parser.add_argument("--code", type=Path, help="another checkout to measure")
    args = parser.parse_args()
    if args.code is not None:
        sys.path.insert(0, str(args.code.resolve()))
    print(f"{asyncio.run(measure(args.database_url)):.2f} ms of CPU per {BATCH}-record batch")


if __name__ == "__main__":
    main()
