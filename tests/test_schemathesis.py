"""Schemathesis over Tollgate's own OpenAPI schema: every operation, as an admin and as a plain
user, with generated valid and invalid inputs. No answer may be a 5xx, and every answer must
match what the schema declares (status code and body).

The app is the real one on the test's backend, served by uvicorn on 127.0.0.1 with the fake
upstream behind its routers; Schemathesis (synchronous, `requests`) runs in a worker thread
so the event loop stays free to serve it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from api.http.params import parse_id
from conftest import Models, Seeder, bearer, live_server
from fakes.upstream import Behaviour, FakeUpstream

# Small on purpose: ~62 operations × two callers × (valid, invalid) on each backend, in about a
# minute on two cores. No fixed seed: every CI run draws new examples and keeps exploring.
MAX_EXAMPLES = int(os.environ.get("TOLLGATE_SCHEMATHESIS_EXAMPLES", "8"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]

# The router each model endpoint's generated body names, so valid bodies reach the upstream
# instead of stopping at "model not found".
MODEL_FOR_PATH = {
    "/v1/chat/completions": "chat", "/v1/completions": "chat", "/v1/embeddings": "embeddings", "/v1/rerank": "rerank",
    "/v1/audio/transcriptions": "audio", "/v1/ocr": "ocr", "/v1/messages": "chat",
}

# Requests that would take the callers' own keys, permissions, budget or routers away half-way
# (every later case would then be a dull 401, 403 or 404). Deleting and editing are still
# fuzzed, on everything else.
PROTECTED = {
    ("DELETE", "/v1/admin/users/{user}"), ("PATCH", "/v1/admin/users/{user}"), ("POST", "/v1/admin/users/{user}/budget"),
    ("DELETE", "/v1/admin/roles/{role}"), ("PATCH", "/v1/admin/roles/{role}"),
    ("DELETE", "/v1/admin/tokens/{token}"), ("DELETE", "/v1/me/keys/{key}"),
    ("POST", "/v1/admin/tokens/{token}/revoke"), ("POST", "/v1/me/keys/{key}/revoke"),
    # A key's or an organization's controls (a budget, limits, a list of models) can take calls away too.
    ("PATCH", "/v1/admin/tokens/{token}"), ("PATCH", "/v1/me/keys/{key}"), ("POST", "/v1/admin/tokens/{token}/budget"),
    ("PATCH", "/v1/admin/organizations/{organization}"), ("POST", "/v1/admin/organizations/{organization}/budget"),
    ("DELETE", "/v1/admin/organizations/{organization}"),
    ("DELETE", "/v1/admin/routers/{router_id}"), ("PATCH", "/v1/admin/routers/{router_id}"),
    ("DELETE", "/v1/admin/providers/{provider_id}"), ("PATCH", "/v1/admin/providers/{provider_id}"),
    ("DELETE", "/v1/collections/{collection_id}"), ("PATCH", "/v1/collections/{collection_id}"),
    ("DELETE", "/v1/documents/{document_id}"), ("DELETE", "/v1/documents/{document_id}/chunks/{chunk_id}"),
}


def _as_id(value: object) -> int | None:
    """The id the server reads in a path parameter, decoded by the server's own function: a
    case that it would refuse (" 2", "2\n", "02") names no id, one it accepts names that one."""
    try:
        return parse_id(value if isinstance(value, (int, str)) else str(value))
    except ValueError:
        return None


@dataclass
class Caller:
    key: str
    email: str
    password: str
    known: dict[str, Any]  # path parameter -> an id that exists (and this caller may see)
    protected: dict[str, set[int]]  # path parameter -> the ids PROTECTED requests must not touch
    # The caller's own role when it follows the routers the fuzzer creates (the admin's), and
    # the names of those it reaches: model calls are aimed at them too.
    role: int | None = None
    reached: list[str] = field(default_factory=list)

    def spares(self, case: schemathesis.Case) -> bool:
        if (case.method, case.path) not in PROTECTED:
            return True
        return not any(_as_id(value) in self.protected.get(name, ()) for name, value in (case.path_parameters or {}).items())

    def aim(self, case: schemathesis.Case, pick: int) -> None:
        """Point a valid case at resources that exist, so it goes past the 404: a model call at
        a router served by the fake upstream, or (one in three, once there are some) at one the
        fuzzer created, which has no provider."""
        for name in list(case.path_parameters or {}):
            if name in self.known:
                case.path_parameters[name] = self.known[name]
        if case.path == "/v1/auth/login":
            case.body = {"email": self.email, "password": self.password}
        if isinstance(case.body, dict):
            if case.path in MODEL_FOR_PATH and "model" in case.body:
                created = self.reached and pick % 3 == 0
                case.body["model"] = self.reached[pick % len(self.reached)] if created else MODEL_FOR_PATH[case.path]
            if case.path == "/v1/search":
                case.body["collection_ids"] = [self.known["collection_id"]]
                if "rerank_model" in case.body:
                    case.body["rerank_model"] = "rerank"


@pytest.fixture
async def st_upstream():
    fake = FakeUpstream(behaviour=Behaviour(embedding_dimensions=16))
    await fake.start()
    yield fake
    await fake.stop()


async def _seed(client: httpx.AsyncClient, upstream: FakeUpstream) -> dict[str, Caller]:
    seed = Seeder(client)
    models = Models(client, seed)
    routers, providers = [], []
    for name, kind, model in (("chat", "text-generation", "fake-chat"), ("embeddings", "text-embeddings-inference", "fake-embed"),
                              ("rerank", "text-classification", "fake-chat"), ("audio", "automatic-speech-recognition", "fake-chat"),
                              ("ocr", "image-text-to-text", "fake-chat")):
        routers.append(await models.router(name, type=kind))
        providers.append(await models.provider(routers[-1], upstream.base_url, model_name=model))
    limits = [{"router": r, "type": "rpm", "value": None} for r in routers]
    organization = await seed.organization()
    admin = await seed.user(permissions=["admin"], organization=organization, limits=limits)
    user = await seed.user(organization=organization, limits=limits, budget=1000)
    callers = {}
    for name, seeded in (("admin", admin), ("user", user)):
        collection = (await client.post("/v1/collections", json={"name": name}, headers=seeded.headers)).json()["id"]
        document = await client.post("/v1/documents", data={"collection_id": str(collection), "name": name}, headers=seeded.headers)
        assert document.status_code == 201, document.text
        chunks = await client.post(f"/v1/documents/{document.json()['id']}/chunks", headers=seeded.headers,
                                   json={"chunks": [{"content": "apples and pears"}, {"content": "plums"}]})
        assert chunks.status_code == 201, chunks.text
        known = {"model": "chat", "key": seeded.key_id, "collection_id": collection, "document_id": document.json()["id"],
                 "chunk_id": chunks.json()["ids"][0], "organization": organization, "role": user.role, "user": user.id,
                 "token": user.key_id, "router_id": routers[0], "provider_id": providers[0],
                 "document": document.json()["id"], "chunk": chunks.json()["ids"][0]}
        protected = {"user": {admin.id, user.id}, "role": {admin.role, user.role}, "token": {admin.key_id, user.key_id},
                     "key": {seeded.key_id}, "organization": {organization}, "router_id": set(routers),
                     "provider_id": set(providers), "collection_id": {collection}, "document_id": {document.json()["id"]}}
        callers[name] = Caller(seeded.key, seeded.email, seeded.password, known, protected,
                               role=admin.role if name == "admin" else None)
    return callers


def _reach_every_router(session: requests.Session, base_url: str, callers: dict[str, Caller]) -> None:
    """Give the roles that follow the fuzzer's routers a limit row (unlimited) on every router
    there is, as a platform team would after creating one, so calls reach them."""
    names: dict[int, str] = {}
    while True:
        page = session.get(f"{base_url}/v1/admin/routers", params={"offset": len(names), "limit": 100},
                           headers=bearer(callers["admin"].key), timeout=30).json()
        names.update((router["id"], router["name"]) for router in page["data"])
        if not page["data"] or len(names) >= page["total"]:
            break
    for caller in callers.values():
        if caller.role is None:
            continue
        limits = [{"router": router, "type": "rpm", "value": None} for router in names]
        response = session.patch(f"{base_url}/v1/admin/roles/{caller.role}", json={"limits": limits},
                                 headers=bearer(callers["admin"].key), timeout=30)
        assert response.status_code == 204, response.text
        caller.reached = sorted(set(names.values()) - set(MODEL_FOR_PATH.values()))


def _fuzz(base_url: str, spec: dict[str, Any], callers: dict[str, Caller]) -> tuple[list[str], Counter[int]]:
    """Every operation, for each caller and mode; one line per failing operation, and the
    statuses seen (to show the run reached past validation)."""
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    history: list[str] = []  # the requests of the current operation, to name one that takes a key away
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for name, caller in callers.items():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans(), pick=st.integers(0, 2**16))
                @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False)
                def run(case: schemathesis.Case, aim: bool, pick: int) -> None:
                    hypothesis.assume(caller.spares(case))
                    if aim and mode is GenerationMode.POSITIVE:
                        caller.aim(case, pick)
                        hypothesis.assume(caller.spares(case))
                    headers = bearer(caller.key)
                    response = case.call(base_url=base_url, session=session, headers=headers, timeout=60)
                    if case.path != "/v1/auth/login":  # where a 401 is a right answer
                        statuses[response.status_code] += 1
                    history.append(f"{case.method} {case.formatted_path} {case.body!r:.300} -> {response.status_code}")
                    case.validate_response(response, checks=CHECKS, headers=headers)
                    if (case.method, case.path, response.status_code) == ("POST", "/v1/admin/routers", 201):
                        _reach_every_router(session, base_url, callers)

                history.clear()
                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    pass
                except (Failure, FailureGroup, requests.RequestException) as error:
                    # Keep going: one run reports every failing operation, not just the first.
                    failures.append(f"{operation.label} as {name} ({mode.value}): {error}")
                for other, still in callers.items():
                    if session.get(f"{base_url}/v1/me/info", headers=bearer(still.key), timeout=30).status_code != 200:
                        # Everything after would be a 401: stop, and say which requests did it.
                        return [*failures, f"{operation.label} as {name} ({mode.value}) took {other}'s key away:\n"
                                + "\n".join(history)], statuses
    return failures, statuses


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(app_factory, st_upstream) -> None:
    client = await app_factory(rag={"vector_store_model": "embeddings", "ingestion_concurrency": 1},
                               login={"max_failures": 1_000_000})
    callers = await _seed(client, st_upstream)
    spec = client.app.openapi()  # type: ignore[attr-defined]
    started = time.monotonic()
    async with live_server(client) as base_url:
        failures, statuses = await asyncio.to_thread(_fuzz, base_url, spec, callers)
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} failing operations in {elapsed:.0f} s:\n" + "\n\n".join(failures)
    # The run went past validation and the callers kept their keys all along.
    assert statuses[200] + statuses[201] + statuses[204] > 100 and statuses[401] == 0, statuses
    for caller in callers.values():
        assert (await client.get("/v1/me/info", headers=bearer(caller.key))).status_code == 200
