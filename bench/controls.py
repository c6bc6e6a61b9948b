"""What the spend controls cost a chat call, side by side in one run of one Tollgate.

Three callers of the same server, their runs alternated `--repeat` times (the median kept):
- no control: a role without limits, a user without budget, a key without controls;
- issue 16's controls: the role's rpm, rpd, tpm and tpd, and the user's budget;
- every control: those, plus the organisation's budget and the key's own budget and rpm, rph,
  tpm and tph limits.
Each limit is high enough never to refuse, so every call is checked and counted. The CPU per
request is the server's process tree's, the usage writer's work for the run included.

    python bench/controls.py --database-url postgresql+asyncpg://…/empty --redis-url redis://…/0 \
        [--workers 2] [--profile-prefix /tmp/controls]   # py-spy profiles of each caller's first run
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import urllib.error
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import MASTER_KEY, PYTHON, api, free_port, serve_tollgate, start, wait_until_up, wrk  # noqa: E402

WINDOWS = ("rpm", "rpd", "tpm", "tpd")
KEY_WINDOWS = ("rpm", "rph", "tpm", "tph")
HIGH = 10**9


def caller(url: str, name: str, role_limits: bool, user_budget: bool, organization_budget: bool, key_controls: bool) -> str:
    """A role, a user and a key of their own, with the controls asked for: the key."""
    routers = [router["id"] for router in api(url, "GET", "/v1/admin/routers", None, MASTER_KEY)["data"]]
    limits = [{"router": router, "type": kind, "value": HIGH if role_limits else None}
              for router in routers for kind in WINDOWS]
    role = api(url, "POST", "/v1/admin/roles", {"name": name, "limits": limits}, MASTER_KEY)["id"]
    organization = None
    if organization_budget:
        organization = api(url, "POST", "/v1/admin/organizations", {"name": name, "budget": HIGH}, MASTER_KEY)["id"]
    user = api(url, "POST", "/v1/admin/users", {"email": f"{name}@example.com", "password": "bench-password", "role": role,
                                                 "budget": HIGH if user_budget else None, "organization": organization},
               MASTER_KEY)["id"]
    token: dict = {"name": name, "user": user}
    if key_controls:
        token |= {"budget": HIGH, "limits": {kind: HIGH for kind in KEY_WINDOWS}}
    key = api(url, "POST", "/v1/admin/tokens", token, MASTER_KEY)["token"]
    try:  # one call first: a caller refused would make the run measure refusals
        api(url, "POST", "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}, key)
    except urllib.error.HTTPError as error:
        sys.exit(f"caller {name!r} is refused: {error.code} {error.read().decode()}")
    return key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", help="an empty database (default: a temporary SQLite file)")
    parser.add_argument("--redis-url", help="Redis for the shared state (default: in-process)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile-prefix", help="py-spy profiles (collapsed stacks) of each caller's first run")
    args = parser.parse_args()
    args.limits = False
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        upstream = f"http://127.0.0.1:{port}"
        start(stack, [PYTHON, "-m", "tests.fakes.upstream", "--port", str(port)])
        wait_until_up(upstream + "/health")
        url, _, model, pid = serve_tollgate(stack, args, Path(tmp), upstream, args.database_url)
        callers = {
            "no control": caller(url, "none", False, False, False, False),
            "issue 16's controls (role limits, user budget)": caller(url, "redesign", True, True, False, False),
            "every control (+ organisation budget, key budget and limits)": caller(url, "every", True, True, True, True),
        }
        for key in callers.values():
            wrk(url, key, model, 4, 2, tollgate=True)  # warm-up
        rps: dict[str, list[float]] = {name: [] for name in callers}
        cpu: dict[str, list[float]] = {name: [] for name in callers}
        for round_number in range(args.repeat):
            for index, (name, key) in enumerate(callers.items()):
                profiler = None
                if args.profile_prefix and round_number == 0:
                    profiler = subprocess.Popen(
                        [str(Path(PYTHON).parent / "py-spy"), "record", "--subprocesses", "--nonblocking", "-f", "raw",
                         "-r", "500", "-d", str(args.duration), "-o", f"{args.profile_prefix}-{index}.txt", "-p", str(pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                run = wrk(url, key, model, 32, args.duration, pid, tollgate=True)
                rps[name].append(run["rps"])
                cpu[name].append(run["cpu_us"])
                if profiler is not None:
                    profiler.wait(timeout=60)
    backend = f"{'PostgreSQL' if args.database_url else 'SQLite'} + {'Redis' if args.redis_url else 'in-process'}"
    print(f"\n{backend}, {args.workers} worker(s), c=32, median of {args.repeat}\n")
    print("| caller | req/s | CPU per request (µs) |")
    print("|---|---|---|")
    for name in callers:
        print(f"| {name} | {statistics.median(rps[name]):.0f} | {statistics.median(cpu[name]):.0f} |")
    base = statistics.median(cpu["issue 16's controls (role limits, user budget)"])
    every = statistics.median(cpu["every control (+ organisation budget, key budget and limits)"])
    print(f"\n- every control against issue 16's: {every / base - 1:+.1%} CPU per request")


if __name__ == "__main__":
    main()
