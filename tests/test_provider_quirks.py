"""What real model servers showed (llama.cpp, faster-whisper-server), each reproduced by the fake:
bounds a provider ignores, streams without usage or cut short, probes that disturb a busy
provider, speech servers without a model list, transcript formats, fractional model sizes."""

from __future__ import annotations

import asyncio
import json

import httpx

from api.providers.base import silent_wav
from conftest import ADMIN, Models, Seeder, live_server, usage_rows
from test_budgets import db_budget
from test_faults import sse_events
from test_gateway_chat import sdk

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]


async def test_the_bound_goes_in_the_field_the_provider_obeys(client, models: Models, upstream) -> None:
    """LangChain sends `max_tokens` as `max_completion_tokens`, which llama.cpp ignores."""
    upstream.behaviour.llama_cpp = True
    upstream.behaviour.reply_words = 50
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, budget=1)
    body = {"model": "chat", "messages": MESSAGES, "max_completion_tokens": 4}
    response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 4
    sent = upstream.received[-1].body
    assert sent["max_tokens"] == 4 and "max_completion_tokens" not in sent


async def test_openai_is_sent_max_completion_tokens(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url, type="openai")
    user = await models.user_for(router)
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 9, "max_completion_tokens": 4}
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
    sent = upstream.received[-1].body
    assert sent["max_completion_tokens"] == 4 and "max_tokens" not in sent


async def test_a_stream_past_its_bound_is_cut_and_the_budget_never_goes_below_zero(client, models: Models, upstream) -> None:
    upstream.behaviour.ignore_bounds = True  # a provider that obeys no field at all
    upstream.behaviour.omit_usage = True
    upstream.behaviour.reply_words = 40
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1000)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, budget=0.03)
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 5, "stream": True}
    response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
    assert response.status_code == 200
    events = sse_events(response.text)
    content = [e for e in events if isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")]
    assert len(content) == 5
    finishes = [e["choices"][0]["finish_reason"] for e in events if isinstance(e, dict) and e.get("choices")]
    assert finishes[-1] == "length" and events[-1] == "[DONE]"
    usage = next(e["usage"] for e in events if isinstance(e, dict) and e.get("usage"))
    assert usage["completion_tokens"] <= 5
    rows = await usage_rows(client)
    assert rows[-1].status == 200 and rows[-1].completion_tokens <= 5
    assert await db_budget(client, user.id) >= 0


async def test_a_whole_answer_past_its_bound_is_charged_no_more_than_reserved(client, models: Models, upstream) -> None:
    upstream.behaviour.ignore_bounds = True
    upstream.behaviour.reply_words = 40
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1000)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, budget=0.03)
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 5}
    response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 5
    assert await db_budget(client, user.id) >= 0


async def test_a_stream_without_usage_counts_the_prompt_as_the_provider_does(client, models: Models, upstream) -> None:
    upstream.behaviour.llama_cpp = True  # counts its template's tokens; no usage in streams
    router = await models.router()
    await models.provider(router, upstream.base_url)  # vllm: it can count a prompt (/tokenize)
    user = await models.user_for(router)
    whole = await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES}, headers=user.headers)
    reported = whole.json()["usage"]["prompt_tokens"]
    assert reported == 5 + 2 * 5 + 4  # five words, the template's tokens
    streamed = await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES, "stream": True},
                                 headers=user.headers)
    usage = next(e["usage"] for e in sse_events(streamed.text) if isinstance(e, dict) and e.get("usage"))
    assert usage["prompt_tokens"] == reported
    assert (await usage_rows(client))[-1].prompt_tokens == reported


async def test_a_stream_without_usage_on_a_provider_that_cannot_count_estimates_the_template(
    client, models: Models, upstream
) -> None:
    upstream.behaviour.llama_cpp = True
    router = await models.router()
    await models.provider(router, upstream.base_url, type="openai")  # no /tokenize
    user = await models.user_for(router)
    streamed = await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES, "stream": True},
                                 headers=user.headers)
    usage = next(e["usage"] for e in sse_events(streamed.text) if isinstance(e, dict) and e.get("usage"))
    # "be brief" and "one two three" are 5 tokens; the template adds 5 a message and 4: 19 (the
    # provider counts 19 too). Counting the text alone would say 5.
    assert usage["prompt_tokens"] >= 5 + 2 * 5 + 4


async def test_a_stream_with_done_but_no_finish_reason_is_recorded_incomplete(client, models: Models, upstream) -> None:
    upstream.behaviour.omit_finish = True  # [DONE] still comes: llama.cpp cut the generation
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    response = await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES, "stream": True},
                                 headers=user.headers)
    events = sse_events(response.text)
    assert events[-1] != "[DONE]" and events[-1]["error"]["code"] == 502
    row = (await usage_rows(client))[-1]
    assert row.status == 502 and row.completion_tokens > 0


async def test_probes_leave_a_provider_answering_real_calls_alone(app_factory, upstream) -> None:
    client = await app_factory(gateway={"health_check_seconds": 0.1, "health_check_timeout_seconds": 0.2})
    models = Models(client, Seeder(client))
    upstream.behaviour.models_blocked_while_generating = True  # llama.cpp's model lock
    upstream.behaviour.chunk_delay_seconds = 0.05
    upstream.behaviour.reply_words = 20
    router = await models.router()
    provider = await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    reader = await Seeder(client).user(permissions=["read_metric"])
    async with live_server(client) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", headers=user.headers,
                               json={"model": "chat", "messages": MESSAGES, "stream": True}) as response:
            text = "".join([chunk async for chunk in response.aiter_text()])
        assert sse_events(text)[-1] == "[DONE]"
        # Not probed while it generated (but for one probe already on its way as it began).
        assert upstream.model_lists_during_streams <= 1
        health = (await http.get("/health/models", headers=reader.headers)).json()
    entry = next(p for r in health["data"] if r["id"] == router for p in r["providers"] if p["id"] == provider)
    assert entry["healthy"] is True and entry["cooling"] is False


async def test_a_speech_server_without_a_model_list_can_be_added_and_stays_healthy(app_factory, upstream) -> None:
    client = await app_factory(gateway={"health_check_seconds": 0.1, "health_check_timeout_seconds": 1})
    models = Models(client, Seeder(client))
    upstream.behaviour.no_model_list = True  # faster-whisper-server
    router = await models.router("whisper", type="automatic-speech-recognition")
    provider = await models.provider(router, upstream.base_url, model_name="fake-chat")
    assert upstream.received[-1].path == "/v1/audio/transcriptions"  # checked by a transcription
    reader = await Seeder(client).user(permissions=["read_metric"])
    for _ in range(100):
        health = (await client.get("/health/models", headers=reader.headers)).json()
        entry = next(p for r in health["data"] if r["id"] == router for p in r["providers"] if p["id"] == provider)
        if entry["checked_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert entry["healthy"] is True and entry["cooling"] is False


async def test_transcript_formats_pass_through_with_the_providers_content_type(client, models: Models, upstream) -> None:
    router = await models.router("whisper", type="automatic-speech-recognition")
    await models.provider(router, upstream.base_url, model_name="fake-chat")
    user = await models.user_for(router)
    audio = silent_wav(1.0)
    text = f"transcribed {len(audio)} bytes"
    openai = sdk(client, user.key)
    assert (await openai.audio.transcriptions.create(model="whisper", file=("a.wav", audio), response_format="text")).strip() == text

    async def transcribe(answer_format: str) -> httpx.Response:
        response = await client.post("/v1/audio/transcriptions", headers=user.headers, files={"file": ("a.wav", audio)},
                                     data={"model": "whisper", "response_format": answer_format})
        assert response.status_code == 200, response.text
        assert upstream.received[-1].body["response_format"] == answer_format
        return response

    srt = await transcribe("srt")
    assert srt.text.startswith("1\n00:00:00,000 --> ") and text in srt.text
    vtt = await transcribe("vtt")
    assert vtt.headers["content-type"].startswith("text/vtt") and vtt.text.startswith("WEBVTT")
    verbose = (await transcribe("verbose_json")).json()
    assert verbose["segments"][0]["text"] == text and verbose["usage"]["completion_tokens"] > 0
    rows = await usage_rows(client)
    assert [r.status for r in rows[-4:]] == [200] * 4 and all(r.completion_tokens > 0 for r in rows[-4:])
    # srt's cue numbers and times are not words of the transcript
    assert rows[-3].completion_tokens == rows[-4].completion_tokens


async def test_a_transcription_reserves_for_the_audio_length(client, models: Models, upstream) -> None:
    router = await models.router("whisper", type="automatic-speech-recognition", cost_completion_tokens=1000)
    await models.provider(router, upstream.base_url, model_name="fake-chat")
    # 4096 tokens at 1000 per million would be 4.1: a ten-word file must not need that.
    user = await models.user_for(router, budget=0.5)
    response = await client.post("/v1/audio/transcriptions", headers=user.headers, files={"file": ("a.wav", silent_wav(3.0))},
                                 data={"model": "whisper"})
    assert response.status_code == 200, response.text
    # An hour of audio in a small compressed file is still bounded by the default.
    big = await client.post("/v1/audio/transcriptions", headers=user.headers, files={"file": ("a.mp3", b"\xff" * 2_000_000)},
                            data={"model": "whisper"})
    assert big.status_code == 402


async def test_model_sizes_take_fractions_of_a_billion(client, models: Models, upstream) -> None:
    router = await models.router()
    small = await models.provider(router, upstream.base_url, model_total_params=0.27, model_active_params=0.27)
    got = (await client.get(f"/v1/admin/providers/{small}", headers=ADMIN)).json()
    assert got["model_total_params"] == 0.27 and got["model_active_params"] == 0.27
    user = await models.user_for(router)
    answer = (await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES}, headers=user.headers)).json()
    small_carbon = answer["usage"]["carbon"]["kWh"]["max"]
    assert small_carbon > 0
    patched = await client.patch(f"/v1/admin/providers/{small}", json={"model_total_params": 1, "model_active_params": 1},
                                 headers=ADMIN)
    assert patched.status_code in (200, 204), patched.text
    await client.app.state.context.catalog.reload()
    bigger = (await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES}, headers=user.headers)).json()
    assert bigger["usage"]["carbon"]["kWh"]["max"] > small_carbon
    assert json.loads(json.dumps(got))["model_total_params"] < 1
