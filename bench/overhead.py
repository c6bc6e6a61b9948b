"""Benchmark: non-streaming chat through Tollgate vs. the fake upstream directly vs. minimal
pass-through proxies, measured with wrk on this machine.

    .venv/bin/python bench/overhead.py [--duration 10] [--connections 32]

To compare two versions in one run, check the other one out elsewhere (`git worktree add
/tmp/before <commit>`) and pass `--baseline /tmp/before` (with `--baseline-database-url`, another
empty database, when using PostgreSQL): it is served the same way, with this interpreter, and
measured in the same alternation.

Prints a Markdown table: requests/s at concurrency 32; p50/p99 latency at concurrency 1 and the
latency each proxy adds over the direct call (each the median of `--repeat` runs, alternating
between targets); each server's resident memory once the runs are over, per worker process and
for its whole process tree (a supervisor included). Every process runs on this machine (2 cores
here), so absolute numbers are only comparable within one run; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MASTER_KEY = "bench-master-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start(stack: ExitStack, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115  (read on failure)
    process = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log.name  # type: ignore[attr-defined]

    def stop() -> None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    return process


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants, from /proc (Linux)."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return pids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_rss(pid: int) -> tuple[float, list[float]]:
    """The RSS of a server's whole process tree and of each of its workers, in MB. With
    several workers, uvicorn's are the children it spawned; with one, the server itself."""
    total, workers = 0.0, []
    for current in tree_pids(pid):
        try:
            rss = rss_mb(current)
            command = Path(f"/proc/{current}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += rss
        if b"spawn_main" in command:
            workers.append(rss)
    return total, workers or [rss_mb(pid)]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for current in tree_pids(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def api(base: str, method: str, path: str, body: dict | None, key: str) -> dict:
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def drained(url: str, timeout: float = 60) -> None:
    """Wait until a Tollgate at `url` has written the usage records of the run just made: the
    next run must not pay for them, and this run's CPU per request includes them. Each worker
    answers /metrics for itself, so the queue must read empty several times in a row."""
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    deadline, empty = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and empty < 4:
        with urllib.request.urlopen(request, timeout=10) as response:
            depth = re.search(r"^tollgate_usage_queue_depth ([\d.e+]+)", response.read().decode(), re.M)
        if depth is None:
            return
        empty = empty + 1 if float(depth[1]) == 0 else 0
        time.sleep(0.25 if empty == 0 else 0.05)


def wrk(url: str, key: str | None, model: str, connections: int, duration: int, pid: int | None = None,
        body: dict | None = None, path: str = "/v1/chat/completions", headers_sent: dict[str, str] | None = None,
        tollgate: bool = False) -> dict[str, float]:
    """`tollgate`: the target is a Tollgate, whose usage writer is waited for after the run."""
    body_text = json.dumps(body or {"model": model, "messages": [{"role": "user", "content": "hello there, how are you today?"}]})
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    if key:
        headers += f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    for name, value in (headers_sent or {}).items():
        headers += f'wrk.headers["{name}"] = "{value}"\n'
    script = f'wrk.method = "POST"\nwrk.body = {json.dumps(body_text)}\n{headers}'
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    threads = min(2, connections)
    cpu_before = tree_cpu_seconds(pid) if pid else 0.0
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", file.name, url + path],
        capture_output=True, text=True, check=True,
    ).stdout
    os.unlink(file.name)
    if tollgate:
        drained(url)
    if "Non-2xx" in output:
        raise RuntimeError(f"errors during the run against {url}:\n{output}")

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", output, re.M)
        assert match, output
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    # CPU per request is what a busy shared machine distorts least: req/s and latency depend on
    # what else runs, the CPU each request costs the proxy's own processes much less.
    cpu_us = (tree_cpu_seconds(pid) - cpu_before) / requests * 1e6 if pid else 0.0
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "cpu_us": cpu_us}


def write_config(folder: Path, database_url: str, redis_url: str | None, upstream: str, settings: str = "") -> Path:
    """A bench Tollgate's config in `folder`: its database, its own Redis key prefix, one chat
    router on `upstream` with prices and a footprint. `settings`: more lines of its `settings:`."""
    prefix = f"bench-{os.getpid()}-{free_port()}:"
    redis = f"  redis:\n    url: {redis_url}\n    key_prefix: \"{prefix}\"\n" if redis_url else ""
    config = folder / "config.yml"
    config.write_text(
        f"settings:\n  auth_master_key: {MASTER_KEY}\n  log_level: WARNING\n  access_log: false\n{settings}"
        f"dependencies:\n  database:\n    url: {database_url}\n{redis}  qdrant:\n    path: {folder}/qdrant\n"
        f"models:\n  - name: chat\n    type: text-generation\n    cost_prompt_tokens: 1\n    cost_completion_tokens: 2\n"
        f"    providers:\n      - type: vllm\n        url: {upstream}\n        model_name: fake-chat\n"
        f"        model_total_params: 8\n        model_active_params: 8\n        model_hosting_zone: FRA\n"
    )
    return config


def serve_tollgate(stack: ExitStack, args: argparse.Namespace, tmp: Path, upstream: str, database_url: str | None,
                   code: Path = ROOT, granian: bool = False) -> tuple[str, str, str, int]:
    """Start Tollgate (the code in `code`) on its own database and Redis key prefix, with a role,
    a user and a key for the bench: its (url, key, model, pid). `granian`: served by Granian
    (`pip install granian`) with the app factory `tollgate serve` gives uvicorn."""
    config = write_config(tmp, database_url or f"sqlite+aiosqlite:///{tmp}/tollgate.db", args.redis_url, upstream)
    port = free_port()
    tollgate = f"http://127.0.0.1:{port}"
    # Imported from `code` first (ahead of the installed package), in the workers too.
    env = {"PYTHONPATH": str(code)} if code != ROOT else None
    if granian:
        subprocess.run([PYTHON, "-m", "api.cli", "--config", str(config), "db", "upgrade"], env={**os.environ, **(env or {})},
                       cwd=tmp, check=True, capture_output=True)
        server = start(stack, [str(Path(PYTHON).parent / "granian"), "--interface", "asgi", "--factory", "--http", "1",
                               "--no-ws", "--loop", "uvloop", "--log-level", "warning", "--no-access-log",
                               "--port", str(port), "--workers", str(args.workers), "api.http.serving:create_served_app"],
                       env={**(env or {}), "TOLLGATE_CONFIG": str(config)}, cwd=tmp)
    else:
        server = start(stack, [PYTHON, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port),
                               "--workers", str(args.workers)], env=env, cwd=tmp)
    try:
        wait_until_up(tollgate + "/health")
    except RuntimeError:
        sys.exit(Path(server.log_path).read_text()[-3000:])
    routers = api(tollgate, "GET", "/v1/admin/routers", None, MASTER_KEY)["data"]
    router_id = routers[0]["id"]
    if args.limits:  # high enough never to refuse during the run, but checked and counted
        limits = [{"router": router_id, "type": t, "value": 10**9} for t in ("rpm", "rpd", "tpm", "tpd")]
        budget: float | None = 10**6
    else:
        limits, budget = [{"router": router_id, "type": "rpm", "value": None}], None
    role = api(tollgate, "POST", "/v1/admin/roles", {"name": "bench", "limits": limits}, MASTER_KEY)["id"]
    # With --limits, every spend control: the organisation's budget and the key's own budget and
    # limits too, where the checkout has them (a checkout from before them refuses the fields).
    organization = None
    if args.limits:
        organization = api_or(tollgate, "/v1/admin/organizations", {"name": "bench", "budget": 10**6}, {"name": "bench"})
    user = api(tollgate, "POST", "/v1/admin/users", {"email": "bench@example.com", "password": "bench-password",
                                                      "role": role, "budget": budget, "organization": organization},
               MASTER_KEY)["id"]
    token = {"name": "bench", "user": user}
    if args.limits:
        key_controls = {"budget": 10**6, "limits": {kind: 10**9 for kind in ("rpm", "rph", "tpm", "tph")}}
        key = api_or(tollgate, "/v1/admin/tokens", {**token, **key_controls}, token, field="token")
    else:
        key = api(tollgate, "POST", "/v1/admin/tokens", token, MASTER_KEY)["token"]
    return tollgate, key, "chat", server.pid


def api_or(base: str, path: str, body: dict, fallback: dict, field: str = "id") -> Any:
    """POST `body`, or `fallback` if this checkout refuses the fields `body` adds (422)."""
    try:
        return api(base, "POST", path, body, MASTER_KEY)[field]
    except urllib.error.HTTPError as error:
        if error.code != 422:
            raise
        return api(base, "POST", path, fallback, MASTER_KEY)[field]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--database-url", help="an empty database for Tollgate (default: a temporary SQLite file)")
    parser.add_argument("--redis-url", help="Redis for Tollgate's shared state (default: in-process)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limits", action="store_true", help="give the key's role rpm/tpm limits and the user a budget")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per target, alternating; the median is kept")
    parser.add_argument("--profile", metavar="FILE",
                        help="py-spy samples of Tollgate's processes during its first c=32 run, as collapsed stacks "
                        "(the baseline's in FILE.baseline)")
    parser.add_argument("--only-tollgate", action="store_true", help="skip the direct call and the pass-through proxies")
    parser.add_argument("--skip-httpx", action="store_true", help="skip the FastAPI + httpx pass-through")
    parser.add_argument("--baseline", metavar="DIR", type=Path,
                        help="another checkout of Tollgate, served and measured alongside this one")
    parser.add_argument("--baseline-database-url", help="an empty database for the baseline (default: SQLite)")
    parser.add_argument("--granian-database-url", metavar="URL",
                        help="also serve this checkout with Granian instead of uvicorn, on this empty database")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    # py-spy installed into the venv is not on PATH unless the venv is activated.
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PYTHON).parent))
    if args.profile and py_spy is None:
        sys.exit("--profile needs py-spy: pip install py-spy")

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        fake = start(stack, [PYTHON, "-m", "tests.fakes.upstream", "--port", str(upstream_port)])
        wait_until_up(upstream + "/health")

        # name -> (url, key, model, the pid whose process tree serves it)
        targets: dict[str, tuple[str, str | None, str, int]] = {"direct (fake upstream)": (upstream, None, "fake-chat", fake.pid)}
        passthroughs = (("FastAPI + httpx pass-through", "bench.passthrough_httpx:app"),
                        ("FastAPI + aiohttp pass-through", "bench.passthrough_aiohttp:app"))
        for name, module in () if args.only_tollgate else passthroughs:
            if args.skip_httpx and "httpx" in module:
                continue
            port = free_port()
            # Run the same way as Tollgate: as many worker processes.
            proxy = start(stack, [PYTHON, "-m", "uvicorn", module, "--port", str(port), "--no-access-log", "--log-level", "warning",
                          "--workers", str(args.workers)],
                  env={"UPSTREAM": upstream})
            wait_until_up(f"http://127.0.0.1:{port}/docs")
            targets[name] = (f"http://127.0.0.1:{port}", None, "fake-chat", proxy.pid)

        label = "auth, routing, usage, cost, carbon" + (", limits, budget" if args.limits else "")
        label += f"; {'PostgreSQL' if args.database_url else 'SQLite'} + {'Redis' if args.redis_url else 'in-process'}, {args.workers} worker(s)"
        if args.baseline is not None:
            folder = Path(tmp) / "baseline"
            folder.mkdir()
            baseline = serve_tollgate(stack, args, folder, upstream, args.baseline_database_url, code=args.baseline.resolve())
            targets[f"Tollgate at {args.baseline} ({label})"] = baseline
        targets[f"Tollgate ({label})"] = serve_tollgate(stack, args, Path(tmp), upstream, args.database_url)
        if args.granian_database_url:
            folder = Path(tmp) / "granian"
            folder.mkdir()
            targets[f"Tollgate on Granian ({label})"] = serve_tollgate(stack, args, folder, upstream, args.granian_database_url,
                                                                     granian=True)

        # Throughput runs alternate between targets, `--repeat` times, and the median is kept:
        # on a shared 2-core machine a single run of each drifts with everything else.
        # Before any load: what start-up alone holds (imports, the tokenizer, the app).
        at_start = {name: tree_rss(pid) for name, (_, _, _, pid) in targets.items()}
        for url, target_key, model, _ in targets.values():
            wrk(url, target_key, model, 4, 2)  # warm-up
        throughputs: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, list[float]] = {name: [] for name in targets}
        for round_number in range(args.repeat):
            for name, (url, target_key, model, pid) in targets.items():
                profiler = None
                if args.profile and name.startswith("Tollgate") and round_number == 0:
                    # The baseline's samples go beside this checkout's, in FILE.baseline.
                    output = args.profile if name.startswith("Tollgate (") else f"{args.profile}.baseline"
                    profiler = subprocess.Popen([py_spy, "record", "--subprocesses", "--nonblocking", "-f", "raw", "-r", "500",
                                                 "-d", str(args.duration), "-o", output, "-p", str(pid)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                run = wrk(url, target_key, model, args.connections, args.duration, pid, tollgate=name.startswith("Tollgate"))
                throughputs[name].append(run["rps"])
                cpu[name].append(run["cpu_us"])
                if profiler is not None:
                    profiler.wait(timeout=60)
        # Latency at c=1 alternates the same way: a single run's p50 drifts by tenths of a
        # millisecond with what else the machine does, more than the differences measured.
        singles: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(args.repeat):
            for name, (url, target_key, model, _) in targets.items():
                singles[name].append(wrk(url, target_key, model, 1, args.duration, tollgate=name.startswith("Tollgate")))
        # After the load: what each server holds once it has served (the figure to keep low).
        memory = {name: tree_rss(pid) for name, (_, _, _, pid) in targets.items()}
        results = {}
        for name in targets:
            results[name] = {"rps": statistics.median(throughputs[name]),
                             "p50": statistics.median(run["p50"] for run in singles[name]),
                             "p99": statistics.median(run["p99"] for run in singles[name]),
                             "cpu_us": statistics.median(cpu[name])}

    direct = results["direct (fake upstream)"]
    print(f"| target | req/s at c={args.connections} | p50 at c=1 (ms) | p99 at c=1 (ms) | added p50 (ms) | added p99 (ms) "
          "| own CPU per request (µs) | RSS per worker at start (MB) | RSS per worker after load (MB) "
          "| RSS of the process tree (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        total, workers = memory[name]
        started = at_start[name][1]
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p50'] - direct['p50']:+.2f} "
              f"| {r['p99'] - direct['p99']:+.2f} | {r['cpu_us']:.0f} | {' / '.join(f'{w:.0f}' for w in started)} "
              f"| {' / '.join(f'{w:.0f}' for w in workers)} | {total:.0f} |")
    passthrough = results.get("FastAPI + aiohttp pass-through")
    tollgates = [name for name in results if name.startswith("Tollgate")]
    print()
    for name in tollgates:
        share = f"{results[name]['rps'] / passthrough['rps']:.0%} of the aiohttp pass-through's req/s, " if passthrough else ""
        print(f"- {name}: {share}CPU per request {results[name]['cpu_us']:.0f} µs")
    if args.baseline is not None:
        before, after = (results[name] for name in tollgates[:2])
        print(f"- this checkout against the baseline: CPU per request {after['cpu_us'] / before['cpu_us'] - 1:+.1%}, "
              f"req/s {after['rps'] / before['rps'] - 1:+.1%}, added p50 {after['p50'] - before['p50']:+.2f} ms")
        # Each round runs the two back to back: their ratio in that round is what the machine's
        # drift from round to round (±7% on a shared VM) disturbs least.
        ratios = [a / b - 1 for a, b in zip(cpu[tollgates[1]], cpu[tollgates[0]], strict=True)]
        print(f"- CPU per request, round by round: baseline {', '.join(f'{v:.0f}' for v in cpu[tollgates[0]])} µs; "
              f"this checkout {', '.join(f'{v:.0f}' for v in cpu[tollgates[1]])} µs; this checkout against the baseline "
              f"{', '.join(f'{r:+.1%}' for r in ratios)} (median {statistics.median(ratios):+.1%})")


if __name__ == "__main__":
    main()
