"""What data policies and the response cache cost a chat call, side by side in one run.

One Tollgate (SQLite and in-process state unless --database-url / --redis-url), the fake
upstream, and four callers of the same 1 kB prompt: a user without policies, a user of an
organisation without policies, a user whose organisation has two policies attached (five
built-in detectors and one expression, all redacting), and a call answered from the cache
(temperature 0 on a router with a cache). After each run at concurrency 32 the bench waits
for Tollgate to write that run's usage records, so that the next run does not pay for them.
Throughput at concurrency 32 alternates between them (`--repeat`, the median kept); latency at
concurrency 1 compares a cache hit with a direct call to the fake upstream.

    .venv/bin/python bench/guards.py [--database-url …] [--redis-url …] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import MASTER_KEY, PYTHON, api, free_port, serve_tollgate, start, wait_until_up, wrk  # noqa: E402

PROMPT = (
    "Please summarise the following note for the steering committee. The quarterly review covered the "
    "migration of the billing service, the new onboarding flow and the support backlog. Contact the "
    "project lead at lead@example.org or on +33 6 12 34 56 78 for the detailed figures. The team shipped "
    "the first two milestones on time; the third slipped by two weeks because the vendor's sandbox was "
    "unavailable. Risks: the data-retention policy is still under legal review, and two engineers move "
    "to another team next month. Decisions needed: approve the extra budget for load testing, confirm the "
    "date of the cut-over, and nominate an owner for the runbook. The customer survey shows satisfaction "
    "up four points, with most complaints about response times in the evening. Next steps: finish the "
    "performance work, publish the runbook, train the support staff and schedule the cut-over rehearsal."
)
POLICIES = [
    {"name": "contact", "rules": [{"detector": "email", "action": "redact"}, {"detector": "phone", "action": "redact"},
                                  {"detector": "payment_card", "action": "redact"}]},
    {"name": "finance", "rules": [{"detector": "iban", "action": "redact"}, {"detector": "secret", "action": "redact"},
                                  {"detector": "regex", "name": "project", "pattern": "PRJ-[0-9]{4}", "action": "redact"}]},
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.workers, args.limits = 1, False
    body = {"model": "chat", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        upstream = f"http://127.0.0.1:{port}"
        fake = start(stack, [PYTHON, "-m", "tests.fakes.upstream", "--port", str(port)])
        wait_until_up(upstream + "/health")
        url, plain_key, _, pid = serve_tollgate(stack, args, Path(tmp), upstream, args.database_url)
        cached_router = api(url, "POST", "/v1/admin/routers", {"name": "cached", "type": "text-generation",
                                                               "cache_ttl_seconds": 3600}, MASTER_KEY)["id"]
        api(url, "POST", "/v1/admin/providers", {"router": cached_router, "type": "vllm", "url": upstream,
                                                 "model_name": "fake-chat"}, MASTER_KEY)
        organization = api(url, "POST", "/v1/admin/organizations", {"name": "guarded"}, MASTER_KEY)["id"]
        routers = [r["id"] for r in api(url, "GET", "/v1/admin/routers", None, MASTER_KEY)["data"]]
        role = api(url, "POST", "/v1/admin/roles", {"name": "guarded", "limits": [
            {"router": r, "type": "rpm", "value": None} for r in routers]}, MASTER_KEY)["id"]
        user = api(url, "POST", "/v1/admin/users", {"email": "guarded@example.com", "password": "bench-password",
                                                     "role": role, "organization": organization}, MASTER_KEY)["id"]
        guarded_key = api(url, "POST", "/v1/admin/tokens", {"name": "guarded", "user": user}, MASTER_KEY)["token"]
        # The same kind of caller (an organisation's user, the same role) with no policy: what
        # the policies cost is the difference between these two.
        other_organization = api(url, "POST", "/v1/admin/organizations", {"name": "unguarded"}, MASTER_KEY)["id"]
        other_user = api(url, "POST", "/v1/admin/users", {"email": "unguarded@example.com", "password": "bench-password",
                                                           "role": role, "organization": other_organization}, MASTER_KEY)["id"]
        unguarded_key = api(url, "POST", "/v1/admin/tokens", {"name": "unguarded", "user": other_user}, MASTER_KEY)["token"]
        for policy in POLICIES:
            api(url, "POST", "/v1/admin/policies", {**policy, "organizations": [organization]}, MASTER_KEY)
        targets = {
            "plain call": (url, plain_key, body, pid),
            "an organisation's user, no policy": (url, unguarded_key, body, pid),
            "two policies (5 detectors + 1 expression)": (url, guarded_key, body, pid),
            "cache hit": (url, guarded_key, {**body, "model": "cached", "temperature": 0}, pid),
            "direct (fake upstream)": (upstream, None, {**body, "model": "fake-chat"}, fake.pid),
        }
        for target_url, key, target_body, _ in targets.values():
            wrk(target_url, key, "", 4, 2, body=target_body)  # warm-up; fills the cache
        rps: dict[str, list[float]] = {name: [] for name in targets}
        p50: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.repeat):
            for name, (target_url, key, target_body, target_pid) in targets.items():
                run = wrk(target_url, key, "", 32, args.duration, target_pid, body=target_body, tollgate=target_url == url)
                rps[name].append(run["rps"])
                cpu[name].append(run["cpu_us"])
            for name, (target_url, key, target_body, _) in targets.items():
                p50[name].append(wrk(target_url, key, "", 1, args.duration, body=target_body, tollgate=target_url == url)["p50"])
    print("| target | req/s at c=32 | CPU per request (µs) | p50 at c=1 (ms) |")
    print("|---|---|---|---|")
    for name in targets:
        print(f"| {name} | {statistics.median(rps[name]):.0f} | {statistics.median(cpu[name]):.0f} | {statistics.median(p50[name]):.2f} |")
    guarded = statistics.median(rps["two policies (5 detectors + 1 expression)"])
    for caller in ("an organisation's user, no policy", "plain call"):
        print(f"\n- policies cost {1 - guarded / statistics.median(rps[caller]):.1%} of the throughput of {caller} (target ≤ 15%)")
    print(f"- a cache hit's p50 {statistics.median(p50['cache hit']):.2f} ms against "
          f"{statistics.median(p50['plain call']):.2f} ms for a call through Tollgate to the fake upstream "
          f"(and {statistics.median(p50['direct (fake upstream)']):.2f} ms for the fake upstream called directly)")


if __name__ == "__main__":
    main()
