"""The JSON model endpoints' shorter middleware stack (api/http/model_lane.py) answers exactly
as the app's whole stack does: successes, refusals and bugs alike."""

from __future__ import annotations

from typing import Any

import httpx

from api.calls.call import Call
from conftest import ADMIN, Models, Seeder

# Headers that differ between any two answers.
_VARYING = {"date", "x-request-id", "x-tollgate-request-id", "x-tollgate-overhead-ms", "content-length"}


class Buggy:
    """A step with a bug, on calls whose last message says so."""

    async def enter(self, call: Call) -> None:
        body: Any = getattr(call.operation, "body", {})
        if body.get("messages", [{}])[-1].get("content") == "explode":
            raise RuntimeError("a bug")

    async def leave(self, call: Call) -> None:
        pass


def _answer(response: httpx.Response) -> tuple[int, str, dict[str, str]]:
    body = response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        parsed = response.json()
        if isinstance(parsed, dict):  # the call's own id and timing differ between any two calls
            parsed.pop("id", None)
            parsed.pop("created", None)
            if isinstance(parsed.get("usage"), dict):
                parsed["usage"].pop("carbon", None)
        body = repr(parsed)
    return response.status_code, body, {k: v for k, v in response.headers.items() if k not in _VARYING}


async def test_the_lane_answers_as_the_whole_stack(app_factory, upstream) -> None:
    lane = await app_factory(call_steps=(Buggy(),), max_request_body_bytes=4096)
    models = Models(lane, Seeder(lane))
    await models.provider(await models.router("chat"), upstream.base_url)
    headers = (await models.user_for()).headers
    # A replica started once the router exists (it reads the catalog at start), its stack
    # built without the lane at its first request.
    whole = await app_factory(call_steps=(Buggy(),), empty=False, max_request_body_bytes=4096)
    whole.app.lane_routes = []
    assert lane.app.lane_routes

    def chat(content: str, **more: Any) -> dict[str, Any]:
        return {"model": "chat", "messages": [{"role": "user", "content": content}], **more}

    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/chat/completions", {"json": chat("hi", max_tokens=5), "headers": headers}),
        ("POST", "/v1/chat/completions", {"content": b"{not json", "headers": headers}),  # 422
        ("POST", "/v1/chat/completions", {"json": chat("hi")}),  # no key: 401
        ("POST", "/v1/chat/completions", {"json": chat("hi"), "headers": {"Authorization": "Bearer tg-wrong"}}),
        ("POST", "/v1/chat/completions", {"json": {"model": "chat", "messages": "no"}, "headers": headers}),  # 422
        ("POST", "/v1/chat/completions", {"json": chat("hi", model="nope"), "headers": headers}),  # 404
        ("POST", "/v1/chat/completions", {"json": chat("x" * 5000), "headers": headers}),  # 413
        ("POST", "/v1/chat/completions", {"json": chat("explode"), "headers": headers}),  # 500
        ("POST", "/v1/embeddings", {"json": {"model": "chat", "input": "hi"}, "headers": headers}),  # wrong type: 400
        ("POST", "/v1/rerank", {"json": {"model": "chat"}, "headers": headers}),  # 422
        ("POST", "/v1/completions", {"json": {"model": "chat", "prompt": "hi", "max_tokens": 3}, "headers": ADMIN}),
        ("GET", "/v1/chat/completions", {"headers": headers}),  # 405, by the whole stack in both
        ("POST", "/v1/chat/completions/", {"json": chat("hi"), "headers": headers}),  # another path
        ("POST", "/v1/chat/completions", {"json": chat("hi", max_tokens=5), "headers": {**headers, "x-request-id": "abc-1"}}),
    ]
    for method, path, arguments in requests:
        answers = []
        for client in (lane, whole):
            transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://tollgate.test") as http:
                answers.append(await http.request(method, path, **arguments))
        assert _answer(answers[0]) == _answer(answers[1]), (method, path)
        assert answers[0].headers.get("x-request-id") is not None
    assert answers[0].headers["x-request-id"] == answers[1].headers["x-request-id"] == "abc-1"
