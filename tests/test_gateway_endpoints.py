"""Embeddings, rerank and transcription; usage views; metrics; carbon against ecologits by hand."""

import time

import pytest
from ecologits.electricity_mix_repository import electricity_mixes
from ecologits.impacts.llm import compute_llm_impacts
from ecologits.utils.range_value import RangeValue

from conftest import ADMIN, Models, usage_rows
from test_gateway_chat import sdk


async def test_embeddings_with_the_sdk(client, models: Models, upstream) -> None:
    router = await models.router("embed", type="text-embeddings-inference", aliases=["text-embedding-3-small"], cost_prompt_tokens=3)
    await models.provider(router, upstream.base_url, model_name="fake-embed")
    user = await models.user_for(router)
    result = await sdk(client, user.key).embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    assert [len(d.embedding) for d in result.data] == [8, 8] and result.data[0].embedding != result.data[1].embedding
    usage = result.usage.model_dump()
    assert usage["prompt_tokens"] == 3 and usage["total_tokens"] == 3
    assert usage["cost"] == pytest.approx(9 / 1_000_000)
    assert usage["carbon"]["kWh"] == {"min": 0.0, "max": 0.0}  # nothing generated
    assert [(r.endpoint, r.prompt_tokens, r.cost_nanos) for r in await usage_rows(client)] == [("/v1/embeddings", 3, 9000)]


async def test_embeddings_count_tokens_when_the_upstream_gives_none(client, models: Models, upstream) -> None:
    router = await models.router("embed", type="text-embeddings-inference")
    await models.provider(router, upstream.base_url, model_name="fake-embed")
    user = await models.user_for(router)
    upstream.behaviour.omit_usage = True
    response = await client.post("/v1/embeddings", json={"model": "embed", "input": "hello world"}, headers=user.headers)
    assert response.status_code == 200 and response.json()["usage"]["prompt_tokens"] == 2  # tiktoken: "hello", " world"


async def test_rerank_openai_compatible_and_tei(client, models: Models, upstream) -> None:
    documents = ["the cat sat", "dogs bark loudly", "a cat and a dog"]
    for provider_type, name in (("vllm", "rerank"), ("tei", "rerank-tei")):
        router = await models.router(name, type="text-classification")
        await models.provider(router, upstream.base_url, model_name="fake-chat", type=provider_type)
        user = await models.user_for(router)
        response = await client.post("/v1/rerank", json={"model": name, "query": "cat", "documents": documents, "top_n": 2}, headers=user.headers)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [r["index"] for r in answer["results"]] == [0, 2]
        assert answer["usage"]["prompt_tokens"] > 0 and answer["usage"]["requests"] == 1
    assert any(r.path == "/rerank" for r in upstream.received)  # TEI's own route was used
    bad = await client.post("/v1/rerank", json={"model": "rerank", "query": "", "documents": []}, headers=user.headers)
    assert bad.status_code == 422


async def test_audio_transcription_multipart(client, models: Models, upstream) -> None:
    router = await models.router("whisper", type="automatic-speech-recognition", cost_completion_tokens=1)
    await models.provider(router, upstream.base_url, model_name="fake-chat")
    user = await models.user_for(router)
    audio = b"RIFF" + b"\x00" * 64_000
    transcript = await sdk(client, user.key).audio.transcriptions.create(model="whisper", file=("speech.wav", audio, "audio/wav"))
    assert transcript.text == f"transcribed {len(audio)} bytes"
    # OpenAI's typed usage (the provider's audio seconds) stays, with Tollgate's accounting beside it.
    assert transcript.usage.type == "duration" and transcript.usage.seconds >= 1
    assert transcript.usage.model_extra["completion_tokens"] > 0 and "cost" in transcript.usage.model_extra
    sent = upstream.received[-1]
    assert sent.path == "/v1/audio/transcriptions" and sent.body["model"] == "fake-chat"
    rows = await usage_rows(client)
    assert rows[-1].endpoint == "/v1/audio/transcriptions" and rows[-1].completion_tokens > 0 and rows[-1].status == 200
    missing = await client.post("/v1/audio/transcriptions", data={"model": "whisper"}, headers=user.headers)
    assert missing.status_code == 422


async def test_carbon_matches_ecologits_by_hand(client, models: Models, upstream) -> None:
    router = await models.router(cost_prompt_tokens=0.15, cost_completion_tokens=0.6)
    await models.provider(router, upstream.base_url, model_total_params=70, model_active_params=12, model_hosting_zone="DEU")
    user = await models.user_for(router)
    upstream.behaviour.reply_words = 40
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "w " * 10}]}, headers=user.headers)
    elapsed = time.perf_counter() - started
    usage = response.json()["usage"]
    assert usage["cost"] == pytest.approx((10 * 0.15 + 40 * 0.6) / 1_000_000)
    mix = electricity_mixes.find_electricity_mix(zone="DEU")

    def impacts(latency: float):
        return compute_llm_impacts(
            model_active_parameter_count=12, model_total_parameter_count=70, output_token_count=40,  # completion tokens only
            if_electricity_mix_adpe=mix.adpe, if_electricity_mix_pe=mix.pe, if_electricity_mix_gwp=mix.gwp,
            if_electricity_mix_wue=mix.wue, datacenter_pue=RangeValue(min=1.09, max=1.2),
            datacenter_wue=RangeValue(min=0.09, max=0.999), request_latency=latency,
        )

    # Latency enters the estimate; bracket it between ~0 and the measured end-to-end time.
    low, high = impacts(1e-3), impacts(elapsed)
    assert low.gwp.value.min * 0.999 <= usage["carbon"]["kgCO2eq"]["min"] <= high.gwp.value.min * 1.001
    assert low.energy.value.max * 0.999 <= usage["carbon"]["kWh"]["max"] <= high.energy.value.max * 1.001
    # Passing total tokens as output (OpenGateLLM's mistake) would give more: not what we do.
    wrong = compute_llm_impacts(
        model_active_parameter_count=12, model_total_parameter_count=70, output_token_count=50,
        if_electricity_mix_adpe=mix.adpe, if_electricity_mix_pe=mix.pe, if_electricity_mix_gwp=mix.gwp,
        if_electricity_mix_wue=mix.wue, datacenter_pue=RangeValue(min=1.09, max=1.2),
        datacenter_wue=RangeValue(min=0.09, max=0.999), request_latency=elapsed,
    )
    assert usage["carbon"]["kgCO2eq"]["max"] < wrong.gwp.value.max


async def test_zero_carbon_when_model_size_unknown(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    response = await client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}, headers=user.headers)
    assert response.json()["usage"]["carbon"] == {"kWh": {"min": 0.0, "max": 0.0}, "kgCO2eq": {"min": 0.0, "max": 0.0}}


async def test_me_usage_and_admin_totals(client, models: Models, seed, upstream) -> None:
    org = await seed.organization()
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    alice = await models.user_for(router, organization=org)
    bob = await models.user_for(router)
    body = {"model": "chat", "messages": [{"role": "user", "content": "a b"}]}
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=body, headers=alice.headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json={**body, "model": "nope"}, headers=alice.headers)).status_code == 404
    assert (await client.post("/v1/chat/completions", json=body, headers=bob.headers)).status_code == 200
    await usage_rows(client)

    mine = (await client.get("/v1/me/usage?limit=2", headers=alice.headers)).json()
    assert mine["total"] == 4 and len(mine["data"]) == 2
    item = mine["data"][0]
    assert item["object"] == "me.usage" and item["key"] == "test" and item["endpoint"] == "/v1/chat/completions"
    assert set(item["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens", "cost", "carbon", "metrics"}
    only_errors = (await client.get("/v1/me/usage?endpoint=/v1/embeddings", headers=alice.headers)).json()
    assert only_errors["total"] == 0
    future = (await client.get(f"/v1/me/usage?start_time={int(time.time()) + 3600}", headers=alice.headers)).json()
    assert future["total"] == 0

    by_user = (await client.get("/v1/admin/usage?group_by=user", headers=ADMIN)).json()["data"]
    totals = {row["id"]: row for row in by_user}
    assert totals[alice.id]["requests"] == 4 and totals[alice.id]["errors"] == 1 and totals[bob.id]["requests"] == 1
    assert totals[alice.id]["cost"] == pytest.approx(3 * 7 / 1_000_000)  # 2 prompt + 5 completion tokens each
    assert totals[alice.id]["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    by_org = (await client.get(f"/v1/admin/usage?group_by=organization&id={org}", headers=ADMIN)).json()["data"]
    assert [(r["id"], r["requests"]) for r in by_org] == [(org, 4)]
    by_router = (await client.get("/v1/admin/usage?group_by=router", headers=ADMIN)).json()["data"]
    assert {r["id"]: r["requests"] for r in by_router} == {router: 4, None: 1}


async def test_metrics_need_read_metric(client, models: Models, seed, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    await client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "a"}]}, headers=user.headers)
    assert (await client.get("/metrics", headers=user.headers)).status_code == 403
    reader = await seed.user(permissions=["read_metric"])
    text = (await client.get("/metrics", headers=reader.headers)).text
    assert 'tollgate_requests_total{endpoint="/v1/chat/completions",model="chat",status="200"} 1.0' in text
    assert "tollgate_request_latency_seconds_bucket" in text and 'tollgate_tokens_total{kind="completion",model="chat"} 5.0' in text

    # Every call counts once, in every series it updates; the histograms' buckets are cumulative.
    refused = {"model": "nowhere", "messages": [{"role": "user", "content": "a"}]}
    assert (await client.post("/v1/chat/completions", json=refused, headers=user.headers)).status_code == 404
    await client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "a"}]}, headers=user.headers)
    samples = {}
    for line in (await client.get("/metrics", headers=reader.headers)).text.splitlines():
        if line.startswith("tollgate_") and " " in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    chat = 'endpoint="/v1/chat/completions"'
    assert samples[f'tollgate_requests_total{{{chat},model="chat",status="200"}}'] == 2
    assert samples[f'tollgate_requests_total{{{chat},model="",status="404"}}'] == 1  # the client's free text is no label
    assert samples[f'tollgate_request_latency_seconds_count{{{chat}}}'] == 3
    buckets = [value for name, value in samples.items() if name.startswith(f"tollgate_request_latency_seconds_bucket{{{chat}")]
    assert buckets == sorted(buckets) and buckets[-1] == 3
    assert samples['tollgate_tokens_total{kind="completion",model="chat"}'] == 10
    assert 'tollgate_cost_total{model="chat"}' in samples and 'tollgate_carbon_kgco2eq_total{model="chat"}' in samples
    assert [value for name, value in samples.items() if name.startswith("tollgate_provider_in_flight")] == [0]
