"""Conversation records: kept only where opted in, after the policies' redaction, encrypted,
grouped into sessions and threads, read and deleted by their user and their organization's
administrators, purged after the retention period."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from api.common import periods
from api.db.tables import ConversationTurn
from conftest import ADMIN, Models, Seeder


async def chat(client, user, messages: list[dict], **extra: object) -> dict:
    response = await client.post("/v1/chat/completions", headers=user.headers,
                                 json={"model": "chat", "messages": messages, **extra})
    assert response.status_code == 200, response.text
    return {} if extra.get("stream") else response.json()


async def setting_up(client, models: Models, upstream, keep: bool = True):
    router = await models.router("chat")
    await models.provider(router, upstream.base_url)
    organization = await Seeder(client).organization()
    if keep:
        assert (await client.patch(f"/v1/admin/organizations/{organization}", json={"keep_conversations": True},
                                   headers=ADMIN)).status_code == 204
    return router, organization


async def test_nothing_is_kept_unless_opted_in(client, models: Models, upstream) -> None:
    router, organization = await setting_up(client, models, upstream, keep=False)
    user = await models.user_for(router, organization=organization)
    await chat(client, user, [{"role": "user", "content": "hello"}])
    assert (await client.get("/v1/me/sessions", headers=user.headers)).json()["total"] == 0
    async with client.app.state.context.session_factory() as session:
        assert (await session.execute(select(ConversationTurn))).first() is None


async def test_chained_calls_make_one_thread_and_sessions_are_private(client, models: Models, upstream) -> None:
    router, organization = await setting_up(client, models, upstream)
    user = await models.user_for(router, organization=organization)
    other = await models.user_for(router)
    history = [{"role": "user", "content": "first question"}]
    for question in ("second question", "third question"):
        answer = (await chat(client, user, history))["choices"][0]["message"]
        history += [{"role": "assistant", "content": answer["content"]}, {"role": "user", "content": question}]
    await chat(client, user, history, stream=True)
    await chat(client, user, [{"role": "user", "content": "something else"}])  # a new conversation
    await chat(client, user, [{"role": "user", "content": "named"}], metadata={"session": "project-x"})
    await chat(client, user, [{"role": "user", "content": "named again"}], metadata={"session": "project-x"})

    listed = (await client.get("/v1/me/sessions", headers=user.headers)).json()
    assert listed["total"] == 3
    by_name = {s["name"]: s for s in listed["data"]}
    assert (by_name["project-x"]["turns"], by_name["project-x"]["threads"]) == (2, 2)
    chained = next(s for s in listed["data"] if s["turns"] == 3)
    assert chained["threads"] == 1
    detail = (await client.get(f"/v1/me/sessions/{chained['id']}", headers=user.headers)).json()
    assert [len(t["request"]["messages"]) for t in detail["data"]] == [1, 3, 5]
    assert all(t["answer"]["choices"][0]["message"]["content"] for t in detail["data"])  # the streamed one too
    assert (await client.get(f"/v1/me/sessions/{chained['id']}", headers=other.headers)).status_code == 404
    assert (await client.get(f"/v1/admin/sessions/{chained['id']}", headers=ADMIN)).status_code == 200
    assert (await client.get("/v1/admin/sessions", params={"user": user.id}, headers=ADMIN)).json()["total"] == 3
    assert (await client.delete(f"/v1/me/sessions/{chained['id']}", headers=other.headers)).status_code == 404
    assert (await client.delete(f"/v1/me/sessions/{chained['id']}", headers=user.headers)).status_code == 204
    assert (await client.get(f"/v1/me/sessions/{chained['id']}", headers=user.headers)).status_code == 404


async def test_records_are_redacted_encrypted_and_purged_after_retention(client, models: Models, upstream, monkeypatch) -> None:
    router, organization = await setting_up(client, models, upstream)
    user = await models.user_for(router, organization=organization)
    policy = {"name": "mail", "organizations": [organization], "rules": [{"detector": "email", "action": "redact"}]}
    assert (await client.post("/v1/admin/policies", json=policy, headers=ADMIN)).status_code == 201
    await chat(client, user, [{"role": "user", "content": "write to ada@acme.example about the launch"}])
    [session] = (await client.get("/v1/me/sessions", headers=user.headers)).json()["data"]
    [turn] = (await client.get(f"/v1/me/sessions/{session['id']}", headers=user.headers)).json()["data"]
    assert turn["request"]["messages"][0]["content"] == "write to [EMAIL] about the launch"
    async with client.app.state.context.session_factory() as db:
        stored = (await db.execute(select(ConversationTurn.request, ConversationTurn.answer))).one()
    assert "launch" not in stored.request and "word" not in (stored.answer or "")  # encrypted at rest

    keeper = client.app.state.context.conversations
    later = periods.utc_now() + timedelta(days=keeper.retention_days - 1)
    monkeypatch.setattr(periods, "utc_now", lambda: later)
    assert await keeper.purge() == 0
    monkeypatch.setattr(periods, "utc_now", lambda: later + timedelta(days=2))
    assert await keeper.purge() == 1
    assert (await client.get("/v1/me/sessions", headers=user.headers)).json()["total"] == 0
