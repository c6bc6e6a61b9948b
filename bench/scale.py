"""Benchmark: how Tollgate's throughput scales with its number of processes, on PostgreSQL + Redis.

    .venv/bin/python bench/scale.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench_scale \\
        --redis-url redis://127.0.0.1:6379/0 [--processes 1,2,4] [--duration 30] [--connections 64] [--limits]

For each process count N, `tollgate serve --workers N` is started on the same (empty or
reusable) database and loaded by wrk with non-streamed chat completions at `--connections`
against the fake upstream (`--upstreams` processes of it, all providers of one router, so one
fake process is not the first thing to saturate). Prints a Markdown table: processes, req/s,
p50/p99, Tollgate's CPU per request; then one line per run saying where the CPU went (Tollgate,
fake upstream, Redis, PostgreSQL, wrk, and any other process, in cores) against the machine's
cores, and so what saturates first.

Everything runs on this machine: on a 2-core machine every process competes for the same two
cores, so more API processes cannot add throughput there; run it on a machine with cores to
spare to see the scaling. PostgreSQL and Redis CPU are read for every process of those names on
the machine, whoever started them: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/scale.py` as well as `python -m bench.scale`

from bench.overhead import MASTER_KEY, PYTHON, api, free_port, start, tree_cpu_seconds, wait_until_up, wrk  # noqa: E402

# Process names (/proc/PID/comm) of the shared services whose CPU is reported.
SERVICE_NAMES = {"Redis": ("redis-server",), "PostgreSQL": ("postgres", "postmaster")}


@dataclass(frozen=True)
class Run:
    processes: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    cores: dict[str, float]  # component -> cores used on average during the measured run


def cpu_by_name(names: tuple[str, ...]) -> float:
    """User + system CPU seconds of every live process whose comm is one of `names`."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in names:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # it ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, every process), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user


def children_cpu_seconds() -> float:
    """CPU of this script's finished children: wrk, once `subprocess.run` has reaped it."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_config(path: Path, database_url: str, redis_url: str, upstreams: list[str], prefix: str) -> None:
    providers = "".join(
        f"      - type: vllm\n        url: {url}\n        model_name: fake-chat\n"
        f"        model_total_params: 8\n        model_active_params: 8\n        model_hosting_zone: FRA\n"
        for url in upstreams
    )
    path.write_text(
        f"settings:\n  auth_master_key: {MASTER_KEY}\n  log_level: WARNING\n  access_log: false\n"
        f"dependencies:\n  database:\n    url: {database_url}\n"
        f"  redis:\n    url: {redis_url}\n    key_prefix: \"{prefix}\"\n"
        f"  qdrant:\n    path: {path.parent}/qdrant\n"
        f"models:\n  - name: chat\n    type: text-generation\n    load_balancing_strategy: shuffle\n"
        f"    cost_prompt_tokens: 1\n    cost_completion_tokens: 2\n    providers:\n{providers}"
    )


def make_key(base: str, limits: bool) -> str:
    """A role, a user and an API key for the load (unique names: the database may be reused)."""
    suffix = f"{os.getpid()}-{int(time.time())}"
    router_id = next(r["id"] for r in api(base, "GET", "/v1/admin/routers", None, MASTER_KEY)["data"] if r["name"] == "chat")
    if limits:  # high enough never to refuse during the run, but checked and counted in Redis
        role_limits = [{"router": router_id, "type": t, "value": 10**9} for t in ("rpm", "rpd", "tpm", "tpd")]
        budget: float | None = 10**6
    else:
        role_limits, budget = [{"router": router_id, "type": "rpm", "value": None}], None
    role = api(base, "POST", "/v1/admin/roles", {"name": f"scale-{suffix}", "limits": role_limits}, MASTER_KEY)["id"]
    user = api(base, "POST", "/v1/admin/users", {"email": f"scale-{suffix}@example.com", "password": "bench-password",
                                                  "role": role, "budget": budget}, MASTER_KEY)["id"]
    return api(base, "POST", "/v1/admin/tokens", {"name": "scale", "user": user}, MASTER_KEY)["token"]


def measure(processes: int, config: Path, workdir: Path, upstream_pids: list[int], key: str | None, limits: bool,
            connections: int, duration: int) -> tuple[Run, str]:
    """Start Tollgate with `processes` workers, load it, stop it. Returns the run and the key
    (made on the first run, reused after)."""
    with ExitStack() as stack:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start(stack, [PYTHON, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port),
                               "--workers", str(processes)], cwd=workdir)
        try:
            wait_until_up(base + "/health")
        except RuntimeError:
            sys.exit(Path(server.log_path).read_text()[-3000:])  # type: ignore[attr-defined]
        key = key or make_key(base, limits)
        wrk(base, key, "chat", 8, 2)  # warm-up: connections, caches, every worker process

        busy_before = machine_busy_seconds()
        before = {
            "Tollgate": tree_cpu_seconds(server.pid),
            "fake upstream": sum(tree_cpu_seconds(pid) for pid in upstream_pids),
            **{name: cpu_by_name(comms) for name, comms in SERVICE_NAMES.items()},
            "wrk": children_cpu_seconds(),
        }
        started = time.monotonic()
        result = wrk(base, key, "chat", connections, duration, server.pid)
        elapsed = time.monotonic() - started
        after = {
            "Tollgate": tree_cpu_seconds(server.pid),
            "fake upstream": sum(tree_cpu_seconds(pid) for pid in upstream_pids),
            **{name: cpu_by_name(comms) for name, comms in SERVICE_NAMES.items()},
            "wrk": children_cpu_seconds(),
        }
        busy = machine_busy_seconds() - busy_before
    cores = {name: (after[name] - before[name]) / elapsed for name in before}
    # Whatever else kept the machine busy meanwhile (on a shared machine, others' work).
    cores["other processes"] = max(0.0, busy / elapsed - sum(cores.values()))
    return Run(processes, result["rps"], result["p50"], result["p99"], result["cpu_us"], cores), key


def saturation(run: Run, machine_cores: int, upstreams: int) -> str:
    """Where the run hit its ceiling, judged from CPU alone (the only resource this loads)."""
    total = sum(run.cores.values())
    parts = ", ".join(f"{name} {used:.2f}" for name, used in run.cores.items())
    line = f"- {run.processes} process(es): cores used: {parts} = {total:.2f} of {machine_cores}"
    tollgate_per_process = run.cores["Tollgate"] / run.processes
    upstream_per_process = run.cores["fake upstream"] / upstreams
    if total >= 0.9 * machine_cores:
        verdict = (f"the machine's CPU is saturated (Tollgate's share {run.cores['Tollgate'] / total:.0%}, "
                   f"other processes' {run.cores['other processes'] / total:.0%})")
    elif tollgate_per_process >= 0.9:
        verdict = f"Tollgate's processes are saturated ({tollgate_per_process:.2f} core each): add processes"
    elif upstream_per_process >= 0.9:
        verdict = f"the fake upstream is saturated ({upstream_per_process:.2f} core per process): raise --upstreams"
    elif max(run.cores["Redis"], run.cores["PostgreSQL"]) >= 0.9:
        verdict = "Redis or PostgreSQL is saturated"
    else:
        verdict = "no CPU is saturated: bound by latency at this concurrency (raise --connections)"
    return f"{line} → {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL for Tollgate (postgresql+asyncpg://...)")
    parser.add_argument("--redis-url", required=True, help="Redis for the shared state (needed by more than 1 process)")
    parser.add_argument("--processes", default="1,2,4", help="process counts to measure, comma-separated")
    parser.add_argument("--duration", type=int, default=30, help="seconds of load per process count")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--upstreams", type=int, default=2, help="fake upstream processes behind the router")
    parser.add_argument("--limits", action="store_true", help="give the key's role rpm/tpm limits and the user a budget")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    counts = [int(n) for n in args.processes.split(",")]
    machine_cores = len(os.sched_getaffinity(0))

    runs: list[Run] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        upstream_urls, upstream_pids = [], []
        for _ in range(args.upstreams):
            port = free_port()
            process = start(stack, [PYTHON, "-m", "tests.fakes.upstream", "--port", str(port)])
            upstream_urls.append(f"http://127.0.0.1:{port}")
            upstream_pids.append(process.pid)
        for url in upstream_urls:
            wait_until_up(url + "/health")
        config = Path(tmp) / "config.yml"
        write_config(config, args.database_url, args.redis_url, upstream_urls, f"bench-scale-{os.getpid()}:")
        key: str | None = None
        for processes in counts:
            run, key = measure(processes, config, Path(tmp), upstream_pids, key, args.limits, args.connections, args.duration)
            runs.append(run)
            print(f"measured {processes} process(es): {run.rps:.0f} req/s", file=sys.stderr)

    mode = "limits + budget" if args.limits else "no limits"
    print(f"Machine: {machine_cores} cores (os.cpu_count() = {os.cpu_count()}); PostgreSQL + Redis, {mode}, "
          f"{args.upstreams} fake upstream process(es), wrk c={args.connections}, {args.duration} s per run.\n")
    print(f"| processes | req/s at c={args.connections} | p50 (ms) | p99 (ms) | Tollgate CPU per request (µs) |")
    print("|---|---|---|---|---|")
    for run in runs:
        print(f"| {run.processes} | {run.rps:.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.cpu_us_per_request:.0f} |")
    print()
    for run in runs:
        print(saturation(run, machine_cores, args.upstreams))


if __name__ == "__main__":
    main()
