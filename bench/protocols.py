"""Benchmark: the cost of translating a provider's protocol. The same chat calls through
Tollgate's `/v1/chat/completions`, to an OpenAI-protocol upstream (passed through) and to an
Anthropic-protocol upstream (translated to the Messages API and back), in one run with wrk.

    .venv/bin/python bench/protocols.py [--duration 10] [--connections 32] [--repeat 3]

Both upstreams are the test suite's fakes (tests/fakes/), answering five words at once. Runs
alternate between the two targets `--repeat` times and the median is kept. Prints a Markdown
table: requests/s at concurrency `--connections`, p50 and p99 there, Tollgate's CPU per request,
and the Anthropic route's throughput as a share of the OpenAI one's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.overhead import MASTER_KEY, PYTHON, ROOT, api, free_port, start, wait_until_up, wrk  # noqa: E402

ANTHROPIC_KEY = "sk-ant-bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-direct", action="store_true", help="skip the fakes called directly")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        openai_port, anthropic_port = free_port(), free_port()
        start(stack, [PYTHON, "-m", "tests.fakes.upstream", "--port", str(openai_port)])
        start(stack, [PYTHON, "-m", "fakes.anthropic", "--port", str(anthropic_port), "--api-key", ANTHROPIC_KEY],
              env={"PYTHONPATH": str(ROOT / "tests")})
        wait_until_up(f"http://127.0.0.1:{openai_port}/health")
        wait_until_up(f"http://127.0.0.1:{anthropic_port}/v1/models")
        config = Path(tmp) / "config.yml"
        config.write_text(
            f"settings:\n  auth_master_key: {MASTER_KEY}\n  log_level: WARNING\n  access_log: false\n"
            f"dependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp}/tollgate.db\n  qdrant:\n    path: {tmp}/qdrant\n"
            "models:\n"
            "  - name: openai-protocol\n    type: text-generation\n    cost_prompt_tokens: 1\n    cost_completion_tokens: 2\n"
            f"    providers:\n      - type: vllm\n        url: http://127.0.0.1:{openai_port}\n        model_name: fake-chat\n"
            "  - name: anthropic-protocol\n    type: text-generation\n    cost_prompt_tokens: 1\n    cost_completion_tokens: 2\n"
            f"    providers:\n      - type: anthropic\n        url: http://127.0.0.1:{anthropic_port}\n"
            f"        model_name: claude-fake\n        key: {ANTHROPIC_KEY}\n"
        )
        port = free_port()
        tollgate = f"http://127.0.0.1:{port}"
        server = start(stack, [PYTHON, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port)], cwd=Path(tmp))
        wait_until_up(tollgate + "/health")
        routers = api(tollgate, "GET", "/v1/admin/routers", None, MASTER_KEY)["data"]
        limits = [{"router": r["id"], "type": "rpm", "value": None} for r in routers]
        role = api(tollgate, "POST", "/v1/admin/roles", {"name": "bench", "limits": limits}, MASTER_KEY)["id"]
        user = api(tollgate, "POST", "/v1/admin/users", {"email": "bench@example.com", "password": "bench-password",
                                                          "role": role}, MASTER_KEY)["id"]
        key = api(tollgate, "POST", "/v1/admin/tokens", {"name": "bench", "user": user}, MASTER_KEY)["token"]

        openai_direct = f"http://127.0.0.1:{openai_port}"
        anthropic_direct = f"http://127.0.0.1:{anthropic_port}"
        messages = [{"role": "user", "content": "hello there, how are you today?"}]
        # name -> (url, Tollgate key, body, path, headers, the pid whose CPU is counted)
        targets = {
            "OpenAI-protocol fake, direct": (openai_direct, None, {"model": "fake-chat", "messages": messages},
                                             "/v1/chat/completions", {}, None),
            "Anthropic-protocol fake, direct": (anthropic_direct, None, {"model": "claude-fake", "max_tokens": 4096,
                                                                          "messages": messages},
                                                "/v1/messages", {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}, None),
            "Tollgate → OpenAI-protocol upstream": (tollgate, key, {"model": "openai-protocol", "messages": messages},
                                                     "/v1/chat/completions", {}, server.pid),
            "Tollgate → Anthropic-protocol upstream": (tollgate, key, {"model": "anthropic-protocol", "messages": messages},
                                                        "/v1/chat/completions", {}, server.pid),
        }
        if args.no_direct:
            targets = {name: target for name, target in targets.items() if name.startswith("Tollgate")}
        for url, target_key, body, path, headers, _ in targets.values():
            wrk(url, target_key, "", 4, 2, body=body, path=path, headers_sent=headers, tollgate=url == tollgate)  # warm-up
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for round_number in range(args.repeat):
            # The order turns each round: a run must not pay for the one before it (the usage
            # writer still writing its records, the collector) more often than the others.
            names = list(targets)
            names = names[round_number % len(names):] + names[:round_number % len(names)]
            for name in names:
                url, target_key, body, path, headers, pid = targets[name]
                # A run at Tollgate ends once its usage writer has written the run's records.
                runs[name].append(wrk(url, target_key, "", args.connections, args.duration, pid, body=body, path=path,
                                      headers_sent=headers, tollgate=url == tollgate))

    results = {name: {field: statistics.median(run[field] for run in runs[name]) for field in ("rps", "p50", "p99", "cpu_us")}
               for name in targets}
    print(f"| target | req/s at c={args.connections} | p50 (ms) | p99 (ms) | Tollgate's CPU per request (µs) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        cpu = f"{r['cpu_us']:.0f}" if r["cpu_us"] else "–"
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {cpu} |")
    through_openai, through_anthropic = results["Tollgate → OpenAI-protocol upstream"], results["Tollgate → Anthropic-protocol upstream"]
    print(f"\n- through Tollgate, the Anthropic route runs at {through_anthropic['rps'] / through_openai['rps']:.0%} of the OpenAI "
          "route's req/s")
    if not args.no_direct:
        fakes = results["Anthropic-protocol fake, direct"]["rps"] / results["OpenAI-protocol fake, direct"]["rps"]
        print(f"- the fakes alone: the Anthropic one at {fakes:.0%} of the OpenAI one's req/s")
    print(f"- Tollgate's CPU per request: {through_anthropic['cpu_us'] / through_openai['cpu_us'] - 1:+.0%} with the translation "
          f"({os.cpu_count()} cores: Tollgate, the fakes and wrk share them)")


if __name__ == "__main__":
    main()
