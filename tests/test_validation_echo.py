"""A 422 says what was wrong and echoes the rejected value, except a secret: an API key, a
provider key or a password is never sent back, whatever the error that carries it."""

from __future__ import annotations

import pytest

from conftest import ADMIN

SECRET = "sk-LEAKED-SECRET-0123456789"


@pytest.fixture
async def router(client) -> int:
    response = await client.post("/v1/admin/routers", json={"name": "chat", "type": "text-generation"}, headers=ADMIN)
    return response.json()["id"]


def _refused(response) -> list[dict]:
    assert response.status_code == 422, response.text
    assert SECRET not in response.text
    return response.json()["detail"]


async def test_a_provider_key_beside_a_wrong_field_is_not_echoed(client, router: int) -> None:
    provider = {"router": router, "type": "vllm", "url": "http://127.0.0.1:9", "key": SECRET}
    # model_name missing: the error's input is the whole body, key included.
    details = _refused(await client.post("/v1/admin/providers", json=provider, headers=ADMIN))
    assert [d["loc"] for d in details] == [["body", "model_name"]]
    # A wrong-typed neighbour is still echoed: only secrets are held back.
    details = _refused(await client.post("/v1/admin/providers", json={**provider, "model_name": "m", "router": "one"},
                                         headers=ADMIN))
    assert details[0]["loc"] == ["body", "router"] and details[0]["input"] == "one"
    # A NUL anywhere fails the whole body, which is not echoed with its key.
    _refused(await client.post("/v1/admin/providers", json={**provider, "model_name": "m\u0000"}, headers=ADMIN))
    # The key in a wrong-typed field, or in the wrong place.
    _refused(await client.post("/v1/admin/providers", json={**provider, "model_name": "m", "key": [SECRET]}, headers=ADMIN))
    # A field the body does not know is ignored (as OpenGateLLM's schema allows): never echoed either.
    ignored = await client.post("/v1/admin/providers", json={**provider, "model_name": "m", "api_key": SECRET}, headers=ADMIN)
    assert ignored.status_code == 400 and SECRET not in ignored.text  # the provider check at 127.0.0.1:9 fails


async def test_an_api_key_sent_in_a_field_that_does_not_exist_is_not_echoed(client, seed) -> None:
    user = await seed.user()
    # Bodies that ignore unknown fields drop it before validating, so it is not in a 422 of another field...
    _refused(await client.post("/v1/me/keys", json={"name": 5, "api_key": SECRET}, headers=user.headers))
    # ...and a body that refuses unknown fields names it without its value.
    details = _refused(await client.patch(f"/v1/me/keys/{user.key_id}", json={"api_key": SECRET}, headers=user.headers))
    assert details[0]["loc"] == ["body", "api_key"]
    _refused(await client.post("/v1/admin/tokens", json={"name": 5, "user": user.id, "token": SECRET}, headers=ADMIN))
    _refused(await client.patch("/v1/me/info", json={"name": 5, "apiKey": SECRET}, headers=user.headers))


async def test_a_password_beside_a_missing_field_is_not_echoed(client, seed) -> None:
    _refused(await client.post("/v1/auth/login", json={"password": SECRET}))
    role = await seed.role()
    _refused(await client.post("/v1/admin/users", json={"password": SECRET, "role": role}, headers=ADMIN))
    _refused(await client.post("/v1/admin/users", json=[{"email": "a@example.com", "password": SECRET}], headers=ADMIN))


async def test_token_counts_are_not_mistaken_for_secrets(client) -> None:
    response = await client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user"}], "max_tokens": "many"},
                                 headers=ADMIN)
    details = _refused(response)
    assert {"loc": ["body", "max_tokens"], "input": "many"}.items() <= details[0].items()
