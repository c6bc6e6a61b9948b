"""The call pipeline (api/calls/pipeline.py): how steps are entered and left, each step of the
app's own list on its own, and a step added to the list reaching every model endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from api.calls.caching import AnswerFromCache
from api.conversations.step import KeepConversations
from api.policies.step import ApplyPolicies
from api.calls.call import Call
from api.calls.gateway import Gateway
from api.calls.operations import Chat
from api.calls.pipeline import Pipeline, StepBase
from api.calls.steps import Admit, Authorise, Forward, Prepare, Price, Record, ResolveRouter
from api.errors import DependencyUnavailableError, InvalidRequestError, NotFoundError, PermissionDeniedError, TooManyRequestsError
from api.identity.principal import MASTER_PRINCIPAL
from api.providers import Endpoint
from api.quota.quotas import Quotas
from conftest import Models, Seeder, usage_rows
from pdfs import make_pdf


@dataclass
class Probe:
    """A step that notes when it is entered and left, and what status the call had then."""

    name: str
    log: list[str]
    fail_with: BaseException | None = None
    answers: bool = False

    async def enter(self, call: Call) -> None:
        self.log.append(f"enter {self.name}")
        if self.fail_with is not None:
            raise self.fail_with
        if self.answers:
            call.answer = {"from": self.name}

    async def leave(self, call: Call) -> None:
        self.log.append(f"leave {self.name} {call.status}")


@dataclass
class Nothing:
    """An operation the probe tests never forward."""

    endpoint: Endpoint = Endpoint.chat
    prepared: list[Call] = field(default_factory=list)

    def prompt_estimate(self) -> int:
        return 7

    def completion_bound(self, call: Call, quotas: Quotas) -> int:
        return 3

    async def prepare(self, call: Call) -> None:
        self.prepared.append(call)

    async def forward(self, call: Call, gateway: Gateway) -> None:
        raise AssertionError("not forwarded")


def _call(model: str = "m", principal=MASTER_PRINCIPAL, operation: Any = None) -> Call:
    return Call(principal, model, operation or Nothing(), "/v1/test")


async def test_steps_enter_in_order_and_leave_in_reverse_once_the_status_is_known() -> None:
    log: list[str] = []
    pipeline = Pipeline([Probe("a", log), Probe("b", log), Probe("c", log, answers=True)])
    call = await pipeline.run(_call())
    assert log == ["enter a", "enter b", "enter c", "leave c 200", "leave b 200", "leave a 200"]
    assert call.answer == {"from": "c"} and call.status == 200


class InOnly(StepBase):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def enter(self, call: Call) -> None:
        self.log.append("enter in-only")


class OutOnly(StepBase):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def leave(self, call: Call) -> None:
        self.log.append(f"leave out-only {call.status}")


async def test_steps_acting_on_one_side_keep_their_place_on_the_way_in_and_out() -> None:
    log: list[str] = []
    pipeline = Pipeline([OutOnly(log), Probe("a", log), InOnly(log), Probe("b", log, fail_with=TooManyRequestsError("busy", retry_after=1))])
    with pytest.raises(TooManyRequestsError):
        await pipeline.run(_call())
    assert log == ["enter a", "enter in-only", "enter b", "leave a 429", "leave out-only 429"]


async def test_a_refused_call_leaves_the_steps_it_entered_with_the_status_its_client_gets() -> None:
    log: list[str] = []
    pipeline = Pipeline([Probe("a", log), Probe("b", log, fail_with=PermissionDeniedError("no")), Probe("c", log)])
    with pytest.raises(PermissionDeniedError):
        await pipeline.run(_call())
    assert log == ["enter a", "enter b", "leave a 403"]


async def test_a_step_that_answers_the_call_skips_the_steps_after_it() -> None:
    log: list[str] = []
    pipeline = Pipeline([Probe("cache", log, answers=True), Probe("forward", log, fail_with=AssertionError())])
    call = await pipeline.run(_call())
    assert call.answer == {"from": "cache"} and log == ["enter cache", "leave cache 200"]


async def test_a_streamed_call_leaves_when_its_stream_is_over_and_only_once() -> None:
    log: list[str] = []

    class OpensStream(Probe):
        async def enter(self, call: Call) -> None:
            await super().enter(call)
            call.stream = object()  # type: ignore[assignment]

    pipeline = Pipeline([Probe("record", log), OpensStream("forward", log)])
    call = await pipeline.run(_call())
    assert log == ["enter record", "enter forward"] and call.finish is not None
    call.status = 200
    await call.finish()
    await call.finish()
    assert log[2:] == ["leave forward 200", "leave record 200"]


async def test_an_unreachable_database_in_a_step_is_a_503_recorded_as_such() -> None:
    log: list[str] = []
    down = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    pipeline = Pipeline([Probe("record", log), Probe("search", log, fail_with=down)])
    with pytest.raises(DependencyUnavailableError):
        await pipeline.run(_call())
    assert log[-1] == "leave record 503"


async def test_a_call_whose_client_left_is_left_as_499() -> None:
    log: list[str] = []
    entered = asyncio.Event()

    class Waits(Probe):
        async def enter(self, call: Call) -> None:
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(Pipeline([Probe("record", log), Waits("forward", log)]).run(_call()))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["enter record", "leave record 499"]


# The app's own steps, each on its own, on a call built by hand.

def _steps(client) -> dict[type, Any]:
    return {type(step): step for step in client.app.state.context.pipeline.steps}


async def test_the_app_runs_its_steps_in_the_documented_order(client) -> None:
    assert [type(step) for step in client.app.state.context.pipeline.steps] == [
        Record, ResolveRouter, Authorise, ApplyPolicies, KeepConversations, Prepare, Admit, AnswerFromCache, Price,
        Forward,
    ]


async def _served(models: Models, upstream, name: str, **extra: object) -> int:
    """A router with a provider: one without any is refused by ResolveRouter."""
    router = await models.router(name, **extra)
    await models.provider(router, upstream.base_url)
    return router


async def test_resolve_router_finds_a_visible_router_of_the_right_type(client, models: Models, upstream) -> None:
    chat = await _served(models, upstream, "chat", aliases=["talk"])
    await _served(models, upstream, "embed", type="text-embeddings-inference")
    await models.router("empty")
    resolve = _steps(client)[ResolveRouter]
    call = _call("talk")
    await resolve.enter(call)
    assert call.router is not None and call.router.id == chat
    with pytest.raises(NotFoundError):
        await resolve.enter(_call("nope"))
    with pytest.raises(InvalidRequestError, match="cannot serve /v1/chat/completions"):
        await resolve.enter(_call("embed"))
    with pytest.raises(NotFoundError, match="has no provider"):
        await resolve.enter(_call("empty"))
    user = await models.user_for()  # a role with no row for the router cannot even see it
    principal = await client.app.state.context.authenticator.authenticate(f"Bearer {user.key}")
    with pytest.raises(NotFoundError):
        await resolve.enter(_call("chat", principal))


async def test_authorise_refuses_a_router_whose_limit_is_zero(client, models: Models, upstream) -> None:
    chat = await _served(models, upstream, "chat")
    steps = _steps(client)
    authenticate = client.app.state.context.authenticator.authenticate
    for limits, refused in (({"rpm": 0}, True), ({"rpm": 5, "tpm": None}, False)):
        user = await models.user_for(chat, limits=limits)
        call = _call("chat", await authenticate(f"Bearer {user.key}"))
        await steps[ResolveRouter].enter(call)
        if refused:
            with pytest.raises(PermissionDeniedError):
                await steps[Authorise].enter(call)
        else:
            await steps[Authorise].enter(call)


async def test_admit_counts_the_call_and_leave_settles_it(client, models: Models, upstream) -> None:
    chat = await _served(models, upstream, "chat")
    user = await models.user_for(chat, limits={"rpm": 1, "tpm": 1000})
    principal = await client.app.state.context.authenticator.authenticate(f"Bearer {user.key}")
    steps = _steps(client)
    call = _call("chat", principal)
    await steps[ResolveRouter].enter(call)
    await steps[Admit].enter(call)
    assert call.headers["x-ratelimit-remaining-requests"] == "0"
    call.tokens(5, 5)
    await steps[Admit].leave(call)
    second = _call("chat", principal)
    await steps[ResolveRouter].enter(second)
    with pytest.raises(TooManyRequestsError):
        await steps[Admit].enter(second)
    counters = (await client.get("/v1/me/info", headers=user.headers)).json()["limits_usage"]
    assert {(c["type"], c["used"]) for c in counters} == {("rpm", 1), ("tpm", 10)}


async def test_price_charges_the_real_tokens_at_the_routers_prices(client, models: Models, upstream) -> None:
    await _served(models, upstream, "chat", cost_prompt_tokens=2, cost_completion_tokens=10)
    steps = _steps(client)
    call = _call("chat")
    await steps[ResolveRouter].enter(call)
    call.answer = {"choices": []}
    call.tokens(1_000, 100)
    await steps[Price].leave(call)
    assert call.cost_nanos == 3_000_000  # 1000 × 2/10⁶ + 100 × 10/10⁶ = 0.003
    assert call.answer["usage"]["cost"] == pytest.approx(0.003) and call.answer["usage"]["total_tokens"] == 1_100


async def test_record_writes_one_usage_record_with_the_calls_outcome(client, models: Models) -> None:
    record = _steps(client)[Record]
    call = _call("chat")
    await record.enter(call)
    call.status = 429
    call.tokens(3, 4)
    await record.leave(call)
    rows = await usage_rows(client)
    assert [(r.endpoint, r.status, r.model, r.total_tokens, r.request_id) for r in rows] == [
        ("/v1/test", 429, "chat", 7, call.request_id)
    ]


async def test_prepare_and_forward_hand_the_call_to_its_operation(client, models: Models, upstream) -> None:
    router = await models.router("chat")
    await models.provider(router, upstream.base_url)
    steps = _steps(client)
    nothing = Nothing()
    await steps[Prepare].enter(call := _call("chat", operation=nothing))
    assert nothing.prepared == [call]
    chat = _call("chat", operation=Chat({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
    await steps[ResolveRouter].enter(chat)
    await steps[Forward].enter(chat)
    assert chat.answer is not None and chat.answer["choices"][0]["message"]["content"]
    assert chat.provider is not None and chat.prompt_tokens > 0 and chat.completion_tokens > 0


# A step added to the list runs for every endpoint that calls a model.

@dataclass
class Witness:
    seen: list[tuple[str, str | None, int | None]] = field(default_factory=list)

    async def enter(self, call: Call) -> None:
        pass

    async def leave(self, call: Call) -> None:
        self.seen.append((call.path, call.model, call.status))


async def test_a_step_added_to_the_list_runs_for_every_model_endpoint(app_factory, upstream) -> None:
    witness = Witness()
    client = await app_factory(
        call_steps=(witness,), rag={"vector_store_model": "embed", "ocr_model": "vision", "ingestion_concurrency": 1}
    )
    models = Models(client, Seeder(client))
    routers = {
        "chat": await models.router("chat"),
        "embed": await models.router("embed", type="text-embeddings-inference"),
        "rank": await models.router("rank", type="text-classification"),
        "listen": await models.router("listen", type="automatic-speech-recognition"),
        "vision": await models.router("vision", type="image-text-to-text"),
    }
    for name, router in routers.items():
        await models.provider(router, upstream.base_url, model_name={"embed": "fake-embed"}.get(name, "fake-chat"))
    user = await models.user_for(*routers.values())
    headers = user.headers
    message = [{"role": "user", "content": "What do cats hunt?"}]
    pdf = "data:application/pdf;base64," + base64.b64encode(make_pdf(["Cats hunt mice."])).decode()

    collection = (await client.post("/v1/collections", json={"name": "docs"}, headers=headers)).json()["id"]
    document = await client.post("/v1/documents", headers=headers, files={"file": ("cats.md", b"# Cats\n\nCats hunt mice.")},
                                 data={"collection_id": str(collection)})
    assert document.status_code == 201, document.text
    for _ in range(200):  # ingestion embeds the chunks in the background
        status = (await client.get(f"/v1/documents/{document.json()['id']}", headers=headers)).json()["status"]
        if status != "processing":
            break
        await asyncio.sleep(0.05)
    assert status == "ready"

    calls = [
        ("/v1/chat/completions", {"json": {"model": "chat", "messages": message}}),
        ("/v1/chat/completions", {"json": {"model": "chat", "messages": message, "stream": True}}),
        ("/v1/chat/completions", {"json": {"model": "chat", "messages": message,
                                           "tools": [{"type": "search", "collection_ids": [collection]}]}}),
        ("/v1/embeddings", {"json": {"model": "embed", "input": "cats"}}),
        ("/v1/rerank", {"json": {"model": "rank", "query": "cats", "documents": ["cats hunt", "dogs bark"]}}),
        ("/v1/audio/transcriptions", {"files": {"file": ("a.wav", b"RIFF....")}, "data": {"model": "listen"}}),
        ("/v1/ocr", {"json": {"model": "vision", "document": {"type": "document_url", "document_url": pdf}}}),
        ("/v1/parse", {"files": {"file": ("cats.pdf", make_pdf(["Cats hunt mice."]))}, "data": {"force_ocr": "true"}}),
        ("/v1/search", {"json": {"query": "cats", "collection_ids": [collection], "rerank_model": "rank"}}),
    ]
    for path, request in calls:
        response = await client.post(path, headers=headers, **request)
        assert response.status_code == 200, (path, response.text)
        if request.get("json", {}).get("stream"):
            assert json.loads(response.text.split("data: ")[-2])["usage"]["total_tokens"] > 0
    seen = set(witness.seen)
    assert {
        ("/v1/embeddings", "embed", 200),  # ingestion's, the chat search's, the search's and the endpoint's
        ("/v1/chat/completions", "chat", 200),
        ("/v1/rerank", "rank", 200),
        ("/v1/audio/transcriptions", "listen", 200),
        ("/v1/ocr", "vision", 200),
        ("/v1/parse", "vision", 200),
    } <= seen
    paths = [path for path, _, _ in witness.seen]
    assert paths.count("/v1/chat/completions") == 3 and paths.count("/v1/embeddings") == 4
    assert paths.count("/v1/rerank") == 2  # the endpoint's and the search's


async def test_a_bug_in_a_step_is_a_500_that_closes_the_connection_and_is_recorded(app_factory, upstream) -> None:
    """The server closes the connection after an unexpected error: the answer says so, so that a
    keep-alive client does not send its next request on a connection about to be reset."""
    log: list[str] = []
    client = await app_factory(call_steps=(Probe("buggy", log, fail_with=RuntimeError("a bug")),))
    models = Models(client, Seeder(client))
    router = await models.router("chat")
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tollgate.test") as http:
        response = await http.post("/v1/chat/completions", headers=user.headers,
                                   json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 500 and response.json() == {"detail": "Internal server error"}
    assert response.headers["connection"] == "close"
    assert [(row.endpoint, row.status) for row in await usage_rows(client)] == [("/v1/chat/completions", 500)]
