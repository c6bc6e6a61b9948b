"""Data policies: detectors with their true and false positives, and block, redact and allow
on what chat (streamed or not), embeddings and rerank send upstream. The provider never sees
a redacted value, a refusal never names the matched text, a record never keeps it."""

from __future__ import annotations

import json
import time

import pytest

from api.policies.detectors import BUILT_IN, custom_detector
from api.policies.scanning import Findings, Rule, Scanner
from conftest import ADMIN, Models, Seeder, usage_rows

FOUND = {
    "email": ("write to ada.lovelace@acme.example today", "ada at acme dot example; a@b"),
    "phone": ("call +33 6 12 34 56 78 tonight", "room 12-34, in 1999"),
    "payment_card": ("card 4111 1111 1111 1111 please", "card 4111 1111 1111 1112 (fails the Luhn check)"),
    "iban": ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN GB83 WEST 1234 5698 7654 32 (wrong check digits)"),
    "national_id": ("SSN 536-90-4399 on file", "SSN 000-12-3456 is not one"),
    "ip_address": ("from 192.168.10.24 and 2001:db8::1", "version 1.2.3.999, ratio 10:20"),
    "secret": ("key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234 leaked", "sk-short and skeleton"),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_each_detector_finds_its_kind_and_not_look_alikes(name: str) -> None:
    found, not_found = FOUND[name]
    detector = BUILT_IN[name]
    assert list(detector.find(found.encode())), found
    assert list(detector.find(not_found.encode())) == [], not_found


def test_redaction_keeps_the_text_around_matches_in_any_script() -> None:
    """Matches are found in the UTF-8 bytes: multi-byte characters before, between and after
    them must come out intact, and a letter of any script still counts as touching a match."""
    rules = tuple(Rule(BUILT_IN[name], "redact", "pii") for name in ("email", "phone"))
    findings = Findings()
    text = "Écrivez à ada@exemple.fr — ☎ +33 6 12 34 56 78, 東京 merci ☺"
    assert Scanner(rules).scan(text, findings) == "Écrivez à [EMAIL] — ☎ [PHONE], 東京 merci ☺"
    assert findings.summary() == "email:redact:1,phone:redact:1"
    assert Scanner(rules).scan("numéro+33 6 12 34 56 78", Findings()) == "numéro+33 6 12 34 56 78"
    assert Scanner(rules).scan("rien à signaler", Findings()) == "rien à signaler"


def test_a_pathological_expression_cannot_stall_a_request() -> None:
    """(a+)+$ backtracks exponentially in a backtracking engine; RE2 runs it in linear time."""
    detector = custom_detector("greedy", "(a+)+$")
    started = time.perf_counter()
    assert list(detector.find(b"a" * 100_000 + b"b")) == []
    assert time.perf_counter() - started < 1.0
    with pytest.raises(Exception, match="linear time"):
        custom_detector("backref", r"(a)\1")


async def chat_policy(client, models: Models, upstream, rules: list[dict], **attach: list[int]):
    router = await models.router("chat")
    await models.provider(router, upstream.base_url)
    embed = await models.router("embed", type="text-embeddings-inference")
    await models.provider(embed, upstream.base_url, model_name="fake-embed")
    rank = await models.router("rank", type="text-classification")
    await models.provider(rank, upstream.base_url)
    organization = await Seeder(client).organization()
    user = await models.user_for(router, embed, rank, organization=organization)
    created = await client.post("/v1/admin/policies", headers=ADMIN,
                                json={"name": "pii", "rules": rules, "organizations": [organization], **attach})
    assert created.status_code == 201, created.text
    return user


def sent(upstream) -> str:
    return json.dumps([r.body for r in upstream.received])


async def test_redact_replaces_matches_before_the_provider_sees_them_on_every_endpoint(client, models: Models, upstream) -> None:
    user = await chat_policy(client, models, upstream, [
        {"detector": "email", "action": "redact"}, {"detector": "payment_card", "action": "redact"},
        {"detector": "regex", "name": "project", "pattern": r"PRJ-\d{4}", "action": "redact"},
    ])
    text = "Mail ada@acme.example about PRJ-1234, card 4111 1111 1111 1111"
    calls = [
        ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": text}]}),
        ("/v1/chat/completions", {"model": "chat", "stream": True,
                                  "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}),
        ("/v1/embeddings", {"model": "embed", "input": [text, "plain"]}),
        ("/v1/rerank", {"model": "rank", "query": text, "documents": [text, "plain"]}),
        # The other ways to a chat model: Anthropic's Messages API and legacy completions.
        ("/v1/messages", {"model": "chat", "max_tokens": 16, "system": text,
                          "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}),
        ("/v1/completions", {"model": "chat", "prompt": text}),
        ("/v1/completions", {"model": "chat", "prompt": [text, "plain"], "stream": True}),
    ]
    for path, body in calls:
        response = await client.post(path, json=body, headers=user.headers)
        assert response.status_code == 200, (path, response.text)
    upstream_text = sent(upstream)
    for secret in ("ada@acme.example", "PRJ-1234", "4111 1111 1111 1111"):
        assert secret not in upstream_text
    assert "Mail [EMAIL] about [PROJECT], card [CARD]" in upstream_text
    rows = [r for r in await usage_rows(client) if r.status == 200]
    assert len(rows) == len(calls) and all("email:redact" in r.policies and "project:redact" in r.policies for r in rows)
    assert not any("ada@" in (r.policies or "") for r in rows)


async def test_block_refuses_naming_the_detector_never_the_text_and_is_recorded(client, models: Models, upstream) -> None:
    user = await chat_policy(client, models, upstream, [{"detector": "iban", "action": "block"}])
    for body in ({"model": "chat", "messages": [{"role": "user", "content": "pay to GB82 WEST 1234 5698 7654 32"}]},
                 {"model": "chat", "stream": True,
                  "messages": [{"role": "user", "content": "pay to GB82 WEST 1234 5698 7654 32"}]},
                 {"model": "embed", "input": "GB82 WEST 1234 5698 7654 32"}):
        path = "/v1/embeddings" if body["model"] == "embed" else "/v1/chat/completions"
        refused = await client.post(path, json=body, headers=user.headers)
        assert refused.status_code == 400
        assert "data policy 'pii'" in refused.json()["detail"] and "iban" in refused.json()["detail"]
        assert "GB82" not in refused.text
    assert upstream.received == [r for r in upstream.received if "GB82" not in json.dumps(r.body)]
    rows = await usage_rows(client)
    assert [r.policies for r in rows if r.status == 400] == ["iban:block:1"] * 3
    fine = await client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "GB83 WEST"}]},
                             headers=user.headers)
    assert fine.status_code == 200


async def test_allow_only_records_and_policies_apply_only_where_attached(client, models: Models, upstream) -> None:
    user = await chat_policy(client, models, upstream, [{"detector": "ip_address", "action": "allow"}])
    outsider = await models.user_for(1)
    body = {"model": "chat", "messages": [{"role": "user", "content": "ping 10.0.0.7"}]}
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=body, headers=outsider.headers)).status_code == 200
    assert sent(upstream).count("10.0.0.7") == 2
    rows = sorted(await usage_rows(client), key=lambda r: r.id)
    assert [r.policies for r in rows] == ["ip_address:allow:1", None]


async def test_policies_are_managed_by_admins_and_checked(client, models: Models, upstream) -> None:
    user = await chat_policy(client, models, upstream, [{"detector": "email", "action": "redact"}])
    [policy] = (await client.get("/v1/admin/policies", headers=ADMIN)).json()["data"]
    assert policy["rules"] == [{"detector": "email", "action": "redact", "name": None, "pattern": None}]
    assert (await client.get("/v1/admin/policies", headers=user.headers)).status_code == 403
    for bad in ({"name": "x", "rules": [{"detector": "regex", "action": "block", "name": "r", "pattern": "(a)\\1"}]},
                {"name": "x", "rules": [{"detector": "regex", "action": "block"}]},
                {"name": "x", "rules": [{"detector": "email", "action": "shred"}]},
                {"name": "x", "rules": []}):
        response = await client.post("/v1/admin/policies", json=bad, headers=ADMIN)
        assert response.status_code in (400, 422), (bad, response.text)
    patched = await client.patch(f"/v1/admin/policies/{policy['id']}", headers=ADMIN,
                                 json={"rules": [{"detector": "email", "action": "block"}]})
    assert patched.status_code == 204
    body = {"model": "chat", "messages": [{"role": "user", "content": "ada@acme.example"}]}
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 400
    assert (await client.delete(f"/v1/admin/policies/{policy['id']}", headers=ADMIN)).status_code == 204
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
