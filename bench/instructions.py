"""Instructions per chat call, counted by valgrind: a figure the machine's noise cannot move.

On a shared 2-core VM the CPU time per request of `bench/overhead.py` moves by ±7% or more
from run to run of the same build, more than most changes are worth. This counts what the
Python process itself executes instead (user space: the kernel's share is left out), with
valgrind's callgrind, for this checkout and optionally another one, on the same load:

- the app is driven in-process through its ASGI interface (its middleware, routes, pipeline,
  the real aiohttp upstream client, PostgreSQL and Redis), uvicorn's HTTP protocol left out;
- `--concurrency` calls at a time: under valgrind the process is ~50× slower than the services
  it calls, so how many calls wait together, and so how many admissions share a Redis command,
  is what this sets (3 comes close to a 2-worker server at c=32, ~2.5 per command);
- the usage writer gathers `--write-interval` seconds of records before each write, as it does
  at full speed (its default 0.2 s holds hundreds of records a batch there);
- counting starts after a warm-up and ends once the usage writer has written the run's records.

    python bench/instructions.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \
        --redis-url redis://127.0.0.1:6379/0 [--baseline /tmp/before] [--controls every|issue16|none]

Each checkout gets a database of its own, made and dropped on the server of `--database-url`.
Needs valgrind (`apt-get install valgrind`); about two minutes a checkout.

`--bytecodes` counts Python bytecodes instead, per function (`sys.settrace` with opcode
events), on the same load and without valgrind: as exact as the instruction count, and it
says which Python functions the work is in (valgrind sees the interpreter's C functions only).
It prints the total per call and, for this checkout, the functions that run the most
(`--top`); with `--baseline`, the functions whose count moved most between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# The child valgrind runs must not import this checkout's packages: its `api` is the one under
# test (PYTHONPATH). So it gets bench/overhead.py's few constants here, and only the parent
# imports that module.
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MASTER_KEY = "bench-master-key"  # bench/overhead.py's
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hello there, how are you today?"}]}
HIGH = 10**9  # limits
BUDGET = 10**6  # as bench/overhead.py's: the commit before issue 16 mishandled budgets past 10^8 in Redis


async def provision(client: Any, controls: str) -> str:
    """A role, a user and a key with the controls asked for (high enough never to refuse): the key.
    A checkout from before the organisation's and the key's controls refuses their fields (422)."""
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    router = (await client.get("/v1/admin/routers", headers=headers)).json()["data"][0]["id"]
    kinds = ("rpm", "rpd", "tpm", "tpd")
    limits = [{"router": router, "type": kind, "value": None if controls == "none" else HIGH} for kind in kinds]
    role = (await client.post("/v1/admin/roles", json={"name": "bench", "limits": limits}, headers=headers)).json()["id"]
    organization = None
    if controls == "every":
        answer = await client.post("/v1/admin/organizations", json={"name": "bench", "budget": BUDGET}, headers=headers)
        organization = answer.json()["id"] if answer.status_code < 300 else None
    user = {"email": "bench@example.com", "password": "bench-password", "role": role,
            "budget": None if controls == "none" else BUDGET, "organization": organization}
    user_id = (await client.post("/v1/admin/users", json=user, headers=headers)).json()["id"]
    token = {"name": "bench", "user": user_id}
    answer = None
    if controls == "every":
        key_controls = {"budget": BUDGET, "limits": {kind: HIGH for kind in ("rpm", "rph", "tpm", "tph")}}
        answer = await client.post("/v1/admin/tokens", json={**token, **key_controls}, headers=headers)
    if answer is None or answer.status_code == 422:
        answer = await client.post("/v1/admin/tokens", json=token, headers=headers)
    return answer.json()["token"]


class BytecodeCount:
    """Bytecodes executed per function (file:line:name), counted while on."""

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}

    def _function(self, frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return self._opcode

    def _opcode(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            self.counts[code] = self.counts.get(code, 0) + 1
        return self._opcode

    def start(self) -> None:
        sys.settrace(self._function)

    def stop(self) -> dict[str, int]:
        sys.settrace(None)
        by_name: dict[str, int] = {}
        for code, count in self.counts.items():
            name = f"{code.co_filename}:{code.co_firstlineno}:{code.co_name}"
            by_name[name] = by_name.get(name, 0) + count
        return by_name


async def drive(config: Path, controls: str, calls: int, concurrency: int, bytecodes: bool = False) -> None:
    """In the process valgrind runs: warm up, then count `calls` chat calls and the writing of
    their usage records (callgrind_control zeroes the counts before, and dumps them after).
    `bytecodes`: no valgrind; the process counts its own bytecodes over the same stretch."""
    os.environ["TOLLGATE_CONFIG"] = str(config)
    import httpx

    try:
        from api.http.serving import create_served_app, tune_collector
        app: Any = create_served_app()
        inner = app.app
    except ImportError:  # a checkout from before `api.http.serving` (its factory tunes the collector)
        from api.main import create_app_from_env  # type: ignore[import-not-found]
        app = inner = create_app_from_env()
        tune_collector = None
    async with inner.router.lifespan_context(inner):
        if tune_collector is not None:
            tune_collector()  # as `tollgate serve` does once start-up is done
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=inner), base_url="http://bench") as client:
            key = await provision(client, controls)
        body = json.dumps(BODY).encode()
        headers = [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode()),
                   (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        statuses: dict[int, int] = {}

        async def call() -> None:
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                     "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
                     "server": ("127.0.0.1", 80), "state": {}}
            sent = False

            async def receive() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()  # the client stays connected
                raise AssertionError

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses[message["status"]] = statuses.get(message["status"], 0) + 1

            await app(scope, receive, send)

        async def caller(count: int) -> None:
            for _ in range(count):
                await call()

        async def written() -> None:
            writer = inner.state.context.usage_writer
            while writer.pending:
                await asyncio.sleep(0.05)

        async def callgrind(command: str) -> None:
            # Not run to completion with the loop blocked: valgrind answers between the
            # process's own instructions.
            process = await asyncio.create_subprocess_exec("callgrind_control", command, str(os.getpid()),
                                                           stdout=subprocess.DEVNULL)
            await process.wait()

        counter = BytecodeCount() if bytecodes else None
        await asyncio.gather(*(caller(10) for _ in range(concurrency)))
        await written()
        if counter is not None:
            counter.start()
        else:
            await callgrind("-z")
        await asyncio.gather(*(caller(calls // concurrency) for _ in range(concurrency)))
        await written()
        functions = counter.stop() if counter is not None else None
        if counter is None:
            await callgrind("-d")
        print(json.dumps({"statuses": statuses, "bytecodes": functions}))


def count(code: Path, args: argparse.Namespace, upstream: str, label: str) -> Any:
    """Instructions per call (millions) for the checkout in `code`; with `--bytecodes`, the
    bytecodes per call of each function instead (file:line:name → count)."""
    from bench.overhead import write_config
    database = f"bench_instructions_{label}_{os.getpid()}"  # two runs at once never share one
    server = re.sub(r"/[^/]*$", "", args.database_url)
    psql = ["psql", "-q", "-d", server.replace("+asyncpg", "") + "/postgres"]
    subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {database}", "-c", f"CREATE DATABASE {database}"],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), f"{server}/{database}", args.redis_url, upstream,
                              f"  usage_write_interval_seconds: {args.write_interval}\n")
        env = {**os.environ, "PYTHONPATH": str(code)}
        subprocess.run([PYTHON, "-m", "api.cli", "--config", str(config), "db", "upgrade"], env=env, cwd=folder,
                       check=True, capture_output=True)
        output = Path(folder) / "callgrind.out"
        child = [PYTHON, __file__, "--child", str(config), "--controls", args.controls, "--calls", str(args.calls),
                 "--concurrency", str(args.concurrency)]
        if args.bytecodes:
            run = subprocess.run([*child, "--bytecodes"], env=env, cwd=folder, capture_output=True, text=True)
            result = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else {}
            if set(result.get("statuses", {})) != {"200"}:
                sys.exit(f"the run of {code} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
            subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {database}"], capture_output=True)
            per_call: dict[str, float] = {}
            for name, total in result["bytecodes"].items():
                short = re.sub(r"^.*/site-packages/", "", name).removeprefix(str(code) + "/")
                per_call[short] = per_call.get(short, 0) + total / args.calls
            return per_call
        run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}.%p", *child],
                             env=env, cwd=folder, capture_output=True, text=True)
        dumps = sorted(Path(folder).glob("callgrind.out.*.1"))
        if run.returncode != 0 or not dumps:
            sys.exit(f"the run of {code} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
        statuses = json.loads(run.stdout.strip().splitlines()[-1])["statuses"]
        if set(statuses) != {"200"}:
            sys.exit(f"{code}: not every call succeeded: {statuses}")
        summary = re.search(r"^summary: (\d+)", dumps[0].read_text(), re.M)
        assert summary, dumps[0]
    subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {database}"], capture_output=True)
    return int(summary[1]) / args.calls / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", help="a PostgreSQL server (any database on it): each checkout gets its own")
    parser.add_argument("--redis-url")
    parser.add_argument("--baseline", type=Path, help="another checkout, counted the same way")
    parser.add_argument("--controls", choices=("every", "issue16", "none"), default="every")
    parser.add_argument("--calls", type=int, default=480)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--write-interval", type=float, default=4.0)
    parser.add_argument("--bytecodes", action="store_true", help="count Python bytecodes per function, without valgrind")
    parser.add_argument("--top", type=int, default=30, help="with --bytecodes: how many functions to list")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(drive(args.child, args.controls, args.calls, args.concurrency, args.bytecodes))
        return
    sys.path.insert(0, str(ROOT))
    from bench.overhead import free_port, start, wait_until_up

    if shutil.which("valgrind") is None and not args.bytecodes:
        sys.exit("valgrind is needed: apt-get install valgrind")
    if not args.database_url:
        sys.exit("--database-url is needed (a PostgreSQL server)")
    with ExitStack() as stack:
        port = free_port()
        start(stack, [PYTHON, "-m", "tests.fakes.upstream", "--port", str(port)])
        wait_until_up(f"http://127.0.0.1:{port}/health")
        upstream = f"http://127.0.0.1:{port}"
        counted = {"this checkout": count(ROOT, args, upstream, "after")}
        if args.baseline is not None:
            counted[str(args.baseline)] = count(args.baseline.resolve(), args, upstream, "before")
    setting = f"controls: {args.controls}, {args.calls} calls, {args.concurrency} at a time"
    if args.bytecodes:
        report_bytecodes(counted, args, setting)
        return
    for name, millions in counted.items():
        print(f"- {name}: {millions:.3f} M instructions per call ({setting})")
    if args.baseline is not None:
        after, before = counted["this checkout"], counted[str(args.baseline)]
        print(f"- this checkout against {args.baseline}: {after / before - 1:+.1%}")


def report_bytecodes(counted: dict[str, dict[str, float]], args: argparse.Namespace, setting: str) -> None:
    for name, functions in counted.items():
        print(f"- {name}: {sum(functions.values()):,.0f} bytecodes per call ({setting})")
    mine = counted["this checkout"]
    if args.baseline is None:
        print("\n| bytecodes per call | function |\n|---|---|")
        for name, ops in sorted(mine.items(), key=lambda item: -item[1])[:args.top]:
            print(f"| {ops:,.0f} | {name} |")
        return
    before = counted[str(args.baseline)]
    after, total_before = sum(mine.values()), sum(before.values())
    print(f"- this checkout against {args.baseline}: {after / total_before - 1:+.1%}")
    # A function moved in its file keeps its name: compare by file and name, not line.
    def by_function(functions: dict[str, float]) -> dict[str, float]:
        merged: dict[str, float] = {}
        for name, ops in functions.items():
            file, _, function = name.rsplit(":", 2)
            merged[f"{file}:{function}"] = merged.get(f"{file}:{function}", 0) + ops
        return merged
    mine, before = by_function(mine), by_function(before)
    print(f"\n| {args.baseline} | this checkout | change | function |\n|---|---|---|---|")
    for name in sorted(set(mine) | set(before), key=lambda n: -abs(mine.get(n, 0) - before.get(n, 0)))[:args.top]:
        print(f"| {before.get(name, 0):,.0f} | {mine.get(name, 0):,.0f} | {mine.get(name, 0) - before.get(name, 0):+,.0f} | {name} |")


if __name__ == "__main__":
    main()
