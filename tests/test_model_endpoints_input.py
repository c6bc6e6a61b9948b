"""What a client of the model endpoints sees when the body or the key is wrong: the same
statuses, in the same order, and the same 422 details as every other endpoint."""

from __future__ import annotations

import pytest

from conftest import ADMIN

PATHS = ["/v1/chat/completions", "/v1/embeddings", "/v1/rerank"]
JSON = {"content-type": "application/json"}


def _details(response) -> list[tuple[str, tuple]]:
    assert response.status_code == 422, response.text
    return [(detail["type"], tuple(detail["loc"])) for detail in response.json()["detail"]]


@pytest.mark.parametrize("path", PATHS)
async def test_invalid_json_is_422_at_its_position_even_without_a_key(client, path: str) -> None:
    response = await client.post(path, content=b'{"model": ', headers=JSON)
    assert _details(response) == [("json_invalid", ("body", 10))]
    assert response.json()["detail"][0]["ctx"] == {"error": "Expecting value"}


@pytest.mark.parametrize("path", PATHS)
async def test_a_well_formed_body_without_a_valid_key_is_401(client, path: str) -> None:
    for headers in (JSON, {**JSON, "Authorization": "Bearer nope"}):
        response = await client.post(path, content=b'{"nothing": "valid"}', headers=headers)
        assert response.status_code == 401, response.text


@pytest.mark.parametrize("path", PATHS)
async def test_an_empty_body_is_a_missing_body(client, path: str) -> None:
    assert _details(await client.post(path, content=b"", headers={**ADMIN, **JSON})) == [("missing", ("body",))]


async def test_field_errors_are_located_in_the_body(client) -> None:
    body = b'{"model": "", "messages": [{"content": "x"}], "n": 0, "max_tokens": "a"}'
    details = _details(await client.post("/v1/chat/completions", content=body, headers={**ADMIN, **JSON}))
    assert set(details) == {
        ("too_short", ("body", "model")),
        ("missing", ("body", "messages", 0, "role")),
        ("greater_than_equal", ("body", "n")),
        ("int_parsing", ("body", "max_tokens")),
    }


@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_a_body_not_declared_json_is_not_read_as_json(client, content_type: str | None) -> None:
    headers = {**ADMIN, **({"content-type": content_type} if content_type else {})}
    response = await client.post("/v1/chat/completions", content=b'{"model": "x", "messages": [{"role": "user"}]}',
                                 headers=headers)
    assert _details(response) == [("model_attributes_type", ("body",))]


async def test_a_json_subtype_is_json(client) -> None:
    body = b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}'
    response = await client.post("/v1/chat/completions", content=body,
                                 headers={**ADMIN, "content-type": "application/vnd.api+json; charset=utf-8"})
    assert response.status_code == 404, response.text


async def test_a_body_that_is_not_utf8_is_400(client) -> None:
    response = await client.post("/v1/embeddings", content=b'{"model": "\xff"}', headers={**ADMIN, **JSON})
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}


async def test_next_to_a_model_endpoint_the_router_answers_as_before(client) -> None:
    wrong_method = await client.get("/v1/chat/completions", headers=ADMIN)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    slash = await client.post("/v1/chat/completions/", json={}, headers=ADMIN, follow_redirects=False)
    assert slash.status_code == 307 and slash.headers["location"].endswith("/v1/chat/completions")
    unknown = await client.post("/v1/chat/completion", json={}, headers=ADMIN)
    assert unknown.status_code == 404


@pytest.mark.parametrize("path", PATHS)
async def test_a_model_endpoints_answers_carry_the_request_id(client, path: str) -> None:
    given = await client.post(path, json={}, headers={**ADMIN, "x-request-id": "trace-42"})
    assert given.status_code == 422 and given.headers["x-request-id"] == "trace-42"
    own = await client.post(path, json={}, headers=ADMIN)
    assert len(own.headers["x-request-id"]) == 32


# Every model endpoint checks its model name the same way, before anything is recorded: a name
# the database cannot store (a NUL, an unpaired surrogate) or an empty or over-long one is a 422.
MODEL_REQUESTS = {
    "/v1/chat/completions": lambda model: {"json": {"model": model, "messages": [{"role": "user", "content": "hi"}]}},
    "/v1/embeddings": lambda model: {"json": {"model": model, "input": "hi"}},
    "/v1/rerank": lambda model: {"json": {"model": model, "query": "q", "documents": ["d"]}},
    "/v1/ocr": lambda model: {"json": {"model": model, "document": {"type": "document_url", "document_url": "data:,x"}}},
    "/v1/audio/transcriptions": lambda model: {"files": {"file": ("a.wav", b"RIFF....")}, "data": {"model": model}},
}


@pytest.mark.parametrize("path", list(MODEL_REQUESTS))
@pytest.mark.parametrize("model", ["ocr\u0000", "a\u0000b", "", "m" * 256])
async def test_every_model_endpoint_refuses_the_same_model_names_before_recording(client, seed, path: str, model: str) -> None:
    from conftest import usage_rows

    user = await seed.user()
    response = await client.post(path, headers=user.headers, **MODEL_REQUESTS[path](model))
    assert response.status_code == 422, (path, response.status_code, response.text)
    assert [d["loc"] for d in response.json()["detail"]] in (
        [["body", "model"]], [["body"]],  # the whole body, where a NUL anywhere in it is refused
    ), response.text
    assert await usage_rows(client) == []  # refused before the pipeline, like any invalid body
