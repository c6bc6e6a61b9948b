"""Soak test: mixed traffic for a long time against two Tollgate processes; does memory stay flat?

    .venv/bin/python bench/soak.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench_soak \\
        --redis-url redis://127.0.0.1:6379/0 [--minutes 30] [--warmup-seconds 120] [--concurrency 16]

Two `tollgate serve` processes (each on its own port, sharing PostgreSQL and Redis like two
replicas) get, round robin, a mix of non-streamed chat, streamed chat, embeddings and search
over a small collection ingested at start, against the fake upstream. At most `--concurrency`
requests are in flight; the run lasts `--warmup-seconds` + `--minutes` and never longer (each
request has a timeout, stragglers are cancelled). Every `--report-seconds` it prints requests/s
per kind, errors, and the RSS of each process (VmRSS of its whole process tree). At the end: each
process's RSS after the warm-up and at the end, the growth, PASS if ≤ `--max-growth` (10%).

Search: Qdrant local mode can be opened by one process only. Without `--qdrant-url`, only the
first process has documents and search (`rag.vector_store_model` set, a local Qdrant folder);
the second has them disabled, so search traffic goes to the first process only and the second
serves chat and embeddings. With `--qdrant-url` (a Qdrant server) both have documents enabled
and search is spread over both like the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/soak.py` as well as `python -m bench.soak`

from bench.overhead import MASTER_KEY, PYTHON, free_port, start, wait_until_up  # noqa: E402

KINDS = ("chat", "stream", "embeddings", "search")
WORDS = ("budget limit router provider token stream search document chunk vector replica cache "
         "latency queue usage carbon cost model gateway tenant organisation role key").split()
DOCUMENTS = ("README.md", "docs/configuration.md", "docs/api.md", "docs/rag.md")
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass
class Server:
    name: str
    base: str
    pid: int
    documents: bool  # serves /v1/documents and /v1/search


@dataclass
class Tally:
    """What one reporting interval saw."""

    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)  # a few error messages, to say what went wrong

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        if len(self.samples) < 3 and message not in self.samples:
            self.samples.append(message)


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (uvicorn workers), from /proc."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
    return total


def write_config(path: Path, database_url: str, redis_url: str, upstream: str, documents: bool, qdrant_url: str | None) -> None:
    vector_store_model = "embeddings" if documents else "null"
    qdrant = f"    url: {qdrant_url}\n    path: null\n" if qdrant_url else f"    path: {path.parent}/qdrant\n"
    provider = ("        model_total_params: 8\n        model_active_params: 8\n        model_hosting_zone: FRA\n")
    path.write_text(
        f"settings:\n  auth_master_key: {MASTER_KEY}\n  log_level: WARNING\n  access_log: false\n"
        f"  rag:\n    vector_store_model: {vector_store_model}\n"
        f"dependencies:\n  database:\n    url: {database_url}\n"
        f"  redis:\n    url: {redis_url}\n    key_prefix: \"bench-soak-{os.getpid()}:\"\n"
        f"  qdrant:\n{qdrant}"
        f"models:\n"
        f"  - name: chat\n    type: text-generation\n    cost_prompt_tokens: 1\n    cost_completion_tokens: 2\n"
        f"    providers:\n      - type: vllm\n        url: {upstream}\n        model_name: fake-chat\n{provider}"
        f"  - name: embeddings\n    type: text-embeddings-inference\n    cost_prompt_tokens: 0.1\n"
        f"    providers:\n      - type: vllm\n        url: {upstream}\n        model_name: fake-embed\n{provider}"
    )


async def call(session: aiohttp.ClientSession, method: str, url: str, key: str, **kwargs: object) -> dict:
    async with session.request(method, url, headers={"Authorization": f"Bearer {key}"}, **kwargs) as response:  # type: ignore[arg-type]
        body = await response.json(content_type=None)
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {body}")
        return body


async def prepare(session: aiohttp.ClientSession, base: str) -> tuple[str, int]:
    """A budgeted user with generous limits on both routers, a key, and a small ingested
    collection. Returns (key, collection id)."""
    suffix = f"{os.getpid()}-{int(time.time())}"
    routers = (await call(session, "GET", f"{base}/v1/admin/routers", MASTER_KEY))["data"]
    ids = [r["id"] for r in routers if r["name"] in ("chat", "embeddings")]
    # Real limits and a budget, so every call goes through admission and settlement in Redis;
    # high enough never to refuse.
    limits = [{"router": rid, "type": t, "value": 10**9} for rid in ids for t in ("rpm", "rpd", "tpm", "tpd")]
    role = (await call(session, "POST", f"{base}/v1/admin/roles", MASTER_KEY, json={"name": f"soak-{suffix}", "limits": limits}))["id"]
    user = (await call(session, "POST", f"{base}/v1/admin/users", MASTER_KEY,
                       json={"email": f"soak-{suffix}@example.com", "password": "soak-password", "role": role, "budget": 10**6}))["id"]
    key = (await call(session, "POST", f"{base}/v1/admin/tokens", MASTER_KEY, json={"name": "soak", "user": user}))["token"]
    collection = (await call(session, "POST", f"{base}/v1/collections", key, json={"name": f"soak-{suffix}"}))["id"]
    document_ids = []
    for name in DOCUMENTS:
        form = aiohttp.FormData()
        form.add_field("collection_id", str(collection))
        form.add_field("file", (ROOT / name).read_bytes(), filename=Path(name).name, content_type="text/markdown")
        document_ids.append((await call(session, "POST", f"{base}/v1/documents", key, data=form))["id"])
    deadline = time.monotonic() + 120
    for document_id in document_ids:
        while True:
            status = (await call(session, "GET", f"{base}/v1/documents/{document_id}", key))["status"]
            if status == "ready":
                break
            if status == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"document {document_id} was not ingested: {status}")
            await asyncio.sleep(0.2)
    return key, collection


def request_for(kind: str, rng: random.Random, collection: int) -> tuple[str, dict]:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
    if kind == "chat":
        return "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": text}]}
    if kind == "stream":
        return "/v1/chat/completions", {"model": "chat", "stream": True, "messages": [{"role": "user", "content": text}]}
    if kind == "embeddings":
        return "/v1/embeddings", {"model": "embeddings", "input": text}
    return "/v1/search", {"query": text, "collection_ids": [collection], "limit": 5,
                          "method": rng.choice(("semantic", "lexical", "hybrid"))}


async def one_request(session: aiohttp.ClientSession, server: Server, kind: str, path: str, body: dict, key: str) -> None:
    async with session.post(server.base + path, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        payload = await response.read()  # a stream is read to its end, as a client would
        if response.status != 200:
            raise RuntimeError(f"{kind} on {server.name}: {response.status} {payload[:200]!r}")
        if kind == "stream" and b"data: [DONE]" not in payload:
            raise RuntimeError(f"stream on {server.name} ended without [DONE]: {payload[-200:]!r}")


async def load(servers: list[Server], key: str, collection: int, concurrency: int, stop_at: float,
               tally: list[Tally]) -> None:
    """`concurrency` clients, each sending one request after the other until `stop_at`; kinds
    in turn, servers round robin (search only to servers with documents)."""
    everywhere = itertools.cycle(servers)
    with_documents = itertools.cycle([s for s in servers if s.documents])
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def client(number: int) -> None:
        rng = random.Random(number)
        for kind in itertools.islice(itertools.cycle(KINDS), number % len(KINDS), None):
            if time.monotonic() >= stop_at:
                return
            server = next(with_documents if kind == "search" else everywhere)
            path, body = request_for(kind, rng, collection)
            try:
                await one_request(session, server, kind, path, body, key)
                tally[0].ok[kind] += 1
            except (TimeoutError, aiohttp.ClientError, RuntimeError) as error:
                tally[0].error(kind, repr(error)[:300])

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        clients = [asyncio.create_task(client(n)) for n in range(concurrency)]
        # Bounded: a client may be mid-request at stop_at; it gets at most one request timeout.
        _, late = await asyncio.wait(clients, timeout=max(0.0, stop_at - time.monotonic()) + REQUEST_TIMEOUT_SECONDS + 5)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


async def baseline(servers: list[Server], warmup_end: float, rss_start: dict[str, int]) -> None:
    """Each process's RSS when the warm-up ends: what the end is compared with."""
    await asyncio.sleep(max(0.0, warmup_end - time.monotonic()))
    rss_start.update({s.name: tree_rss_kib(s.pid) for s in servers})
    print(f"(warm-up over: baseline RSS {', '.join(f'{n} {kib / 1024:.1f} MiB' for n, kib in rss_start.items())})",
          flush=True)


async def report(servers: list[Server], started: float, warmup_end: float, stop_at: float, every: float,
                 tally: list[Tally], totals: Tally) -> None:
    """Every `every` seconds until `stop_at`: requests/s per kind, errors, each process's RSS."""
    header = " | ".join(f"{kind}/s" for kind in KINDS)
    print(f"| minute | phase | {header} | errors | " + " | ".join(f"RSS {s.name} (MiB)" for s in servers) + " |")
    print("|---|---|" + "---|" * len(KINDS) + "---|" + "---|" * len(servers), flush=True)
    last = started
    while last < stop_at:
        await asyncio.sleep(max(0.0, min(last + every, stop_at) - time.monotonic()))
        now = time.monotonic()
        interval, tally[0] = tally[0], Tally()
        totals.ok.update(interval.ok)
        totals.errors.update(interval.errors)
        totals.samples += [m for m in interval.samples if m not in totals.samples][: max(0, 5 - len(totals.samples))]
        seconds = max(now - last, 1e-9)
        phase = "warm-up" if last < warmup_end else "measured"  # an interval the baseline falls in is warm-up
        rates = " | ".join(f"{interval.ok[kind] / seconds:.1f}" for kind in KINDS)
        rss = " | ".join(f"{tree_rss_kib(s.pid) / 1024:.1f}" for s in servers)
        print(f"| {(now - started) / 60:.1f} | {phase} | {rates} | {sum(interval.errors.values())} | {rss} |", flush=True)
        last = now


async def soak(servers: list[Server], args: argparse.Namespace) -> bool:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        key, collection = await prepare(session, servers[0].base)
    started = time.monotonic()
    warmup_end = started + args.warmup_seconds
    stop_at = warmup_end + args.minutes * 60
    tally, totals = [Tally()], Tally()
    rss_start: dict[str, int] = {}
    await asyncio.gather(
        load(servers, key, collection, args.concurrency, stop_at, tally),
        baseline(servers, warmup_end, rss_start),
        report(servers, started, warmup_end, stop_at, args.report_seconds, tally, totals),
    )
    # Requests that ended after the last report (stragglers past stop_at) count in the totals.
    totals.ok.update(tally[0].ok)
    totals.errors.update(tally[0].errors)
    totals.samples += tally[0].samples[: max(0, 5 - len(totals.samples))]

    print()
    print("| process | RSS after warm-up (MiB) | RSS at end (MiB) | growth | verdict |")
    print("|---|---|---|---|---|")
    passed = True
    for server in servers:
        begin, end = rss_start[server.name], tree_rss_kib(server.pid)
        growth = (end - begin) / begin if begin and end else float("inf")  # 0: the process is gone
        ok = growth <= args.max_growth
        passed &= ok
        print(f"| {server.name} | {begin / 1024:.1f} | {end / 1024:.1f} | {growth:+.1%} | {'PASS' if ok else 'FAIL'} |")
    done = sum(totals.ok.values())
    failed = sum(totals.errors.values())
    print(f"\nrequests: {done} ok ({', '.join(f'{k} {totals.ok[k]}' for k in KINDS)}), {failed} errors")
    for sample in totals.samples:
        print(f"  error: {sample}")
    print(f"memory: {'PASS' if passed else 'FAIL'} (growth ≤ {args.max_growth:.0%} per process); "
          f"errors: {'PASS' if failed == 0 else 'FAIL'}")
    return passed and failed == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL for Tollgate (postgresql+asyncpg://...)")
    parser.add_argument("--redis-url", required=True, help="Redis shared by the two processes")
    parser.add_argument("--qdrant-url", help="a Qdrant server: documents and search on both processes")
    parser.add_argument("--minutes", type=float, default=30, help="measured minutes, after the warm-up")
    parser.add_argument("--warmup-seconds", type=float, default=120, help="traffic before the RSS baseline is taken")
    parser.add_argument("--report-seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of each tollgate process")
    parser.add_argument("--max-growth", type=float, default=0.10, help="RSS growth allowed per process (0.10 = 10%%)")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        start(stack, [PYTHON, "-m", "tests.fakes.upstream", "--port", str(upstream_port)])
        wait_until_up(upstream + "/health")
        servers = []
        # One after the other: two processes migrating and seeding one fresh database at once
        # would race each other.
        for index, name in enumerate(("A", "B")):
            documents = index == 0 or args.qdrant_url is not None
            workdir = Path(tmp) / name
            workdir.mkdir()
            config = workdir / "config.yml"
            write_config(config, args.database_url, args.redis_url, upstream, documents, args.qdrant_url)
            port = free_port()
            process = start(stack, [PYTHON, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port),
                                    "--workers", str(args.workers)], cwd=workdir)
            try:
                wait_until_up(f"http://127.0.0.1:{port}/health")
            except RuntimeError:
                sys.exit(Path(process.log_path).read_text()[-3000:])  # type: ignore[attr-defined]
            servers.append(Server(name, f"http://127.0.0.1:{port}", process.pid, documents))
        roles = "; ".join(f"process {s.name} (pid {s.pid}): chat, stream, embeddings{', search' if s.documents else ''}"
                          for s in servers)
        print(f"Soak: {args.warmup_seconds:.0f} s warm-up + {args.minutes:g} min, {args.concurrency} in flight, "
              f"PostgreSQL + Redis; {roles}\n", flush=True)
        passed = asyncio.run(soak(servers, args))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
