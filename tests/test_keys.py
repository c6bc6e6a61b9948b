"""API keys: shown once, hashed at rest, owned, revocable, expiring."""

import asyncio
import time
from collections.abc import Callable

from sqlalchemy import select

from api.db.tables import ApiKey
from api.identity.secrets import hash_api_key
from conftest import ADMIN, Seeder, bearer


async def test_key_is_shown_once_and_stored_as_hash(client, seed: Seeder) -> None:
    user = await seed.user()
    created = await client.post("/v1/me/keys", json={"name": "laptop"}, headers=user.headers)
    assert created.status_code == 201
    key = created.json()["token"]
    assert key.startswith("tg-") and len(key) >= 3 + 43  # 256 bits in base64url

    listed = (await client.get("/v1/me/keys", headers=user.headers)).json()
    laptop = next(k for k in listed["data"] if k["name"] == "laptop")
    assert laptop["object"] == "key" and key not in str(listed) and laptop["token"].endswith(key[-4:])
    single = (await client.get(f"/v1/me/keys/{laptop['id']}", headers=user.headers)).json()
    assert single["token"] == laptop["token"]

    async with client.app.state.context.session_factory() as session:
        stored = (await session.execute(select(ApiKey).where(ApiKey.id == laptop["id"]))).scalar_one()
    assert stored.key_hash == hash_api_key(key)
    assert key not in {str(v) for v in vars(stored).values()}

    assert (await client.get("/v1/me/info", headers=bearer(key))).status_code == 200


async def test_deleted_key_is_refused_immediately(client, seed: Seeder) -> None:
    user = await seed.user()
    created = (await client.post("/v1/me/keys", json={"name": "temp"}, headers=user.headers)).json()
    assert (await client.get("/v1/me/info", headers=bearer(created["token"]))).status_code == 200  # now cached
    assert (await client.delete(f"/v1/me/keys/{created['id']}", headers=user.headers)).status_code == 204
    response = await client.get("/v1/me/info", headers=bearer(created["token"]))
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200


async def test_user_cannot_see_or_delete_another_users_keys(client, seed: Seeder) -> None:
    alice, bob = await seed.user(), await seed.user()
    assert (await client.get(f"/v1/me/keys/{bob.key_id}", headers=alice.headers)).status_code == 404
    assert (await client.delete(f"/v1/me/keys/{bob.key_id}", headers=alice.headers)).status_code == 404
    listed = (await client.get("/v1/me/keys", headers=alice.headers)).json()
    assert [k["id"] for k in listed["data"]] == [alice.key_id] and listed["total"] == 1
    assert (await client.get("/v1/me/info", headers=bob.headers)).status_code == 200


async def test_expiry(client, seed: Seeder) -> None:
    user = await seed.user()
    past = await client.post("/v1/me/keys", json={"name": "old", "expires": int(time.time()) - 10}, headers=user.headers)
    assert past.status_code == 400 and "future" in past.json()["detail"]
    soon = (await client.post("/v1/me/keys", json={"name": "soon", "expires": int(time.time()) + 2}, headers=user.headers)).json()
    assert (await client.get("/v1/me/info", headers=bearer(soon["token"]))).status_code == 200
    await asyncio.sleep(2.1)
    response = await client.get("/v1/me/info", headers=bearer(soon["token"]))
    assert response.status_code == 401 and "expired" in response.json()["detail"]


async def test_maximum_key_lifetime(app_factory) -> None:
    client = await app_factory(keys={"max_lifetime_days": 30})
    user = await Seeder(client).user()
    too_far = await client.post("/v1/me/keys", json={"name": "k", "expires": int(time.time()) + 31 * 86400}, headers=user.headers)
    assert too_far.status_code == 400 and "30 days" in too_far.json()["detail"]
    created = (await client.post("/v1/me/keys", json={"name": "k"}, headers=user.headers)).json()
    key = (await client.get(f"/v1/me/keys/{created['id']}", headers=user.headers)).json()
    assert abs(key["expires"] - (time.time() + 30 * 86400)) < 60


async def test_admin_tokens(client, seed: Seeder) -> None:
    alice, bob = await seed.user(), await seed.user()
    created = await client.post("/v1/admin/tokens", json={"name": "ci", "user": alice.id}, headers=ADMIN)
    assert created.status_code == 201
    token_id, key = created.json()["id"], created.json()["token"]
    assert (await client.get("/v1/me/info", headers=bearer(key))).json()["id"] == alice.id

    for_alice = (await client.get(f"/v1/admin/tokens?user={alice.id}", headers=ADMIN)).json()
    assert {t["id"] for t in for_alice["data"]} == {alice.key_id, token_id} and for_alice["total"] == 2
    assert all(t["object"] == "token" and t["user"] == alice.id for t in for_alice["data"])
    everyone = (await client.get("/v1/admin/tokens?limit=100", headers=ADMIN)).json()
    assert {alice.key_id, bob.key_id, token_id} <= {t["id"] for t in everyone["data"]}
    assert key not in str(everyone)

    got = (await client.get(f"/v1/admin/tokens/{token_id}", headers=ADMIN)).json()
    assert got["name"] == "ci" and got["user"] == alice.id
    assert (await client.delete(f"/v1/admin/tokens/{token_id}", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/me/info", headers=bearer(key))).status_code == 401
    assert (await client.delete(f"/v1/admin/tokens/{token_id}", headers=ADMIN)).status_code == 404
    missing_user = await client.post("/v1/admin/tokens", json={"name": "x", "user": 999999}, headers=ADMIN)
    assert missing_user.status_code == 404


async def test_revocation_reaches_another_replica_within_one_second(app_factory) -> None:
    replica_a = await app_factory()
    replica_b = await app_factory()
    user = await Seeder(replica_a).user()
    assert (await replica_b.get("/v1/me/info", headers=user.headers)).status_code == 200  # cached on B
    await asyncio.sleep(1.3)  # past the entry's first second: B now keeps it because nothing changed
    assert (await replica_b.get("/v1/me/info", headers=user.headers)).status_code == 200
    assert (await replica_a.delete(f"/v1/me/keys/{user.key_id}", headers=user.headers)).status_code == 204
    await asyncio.sleep(1.05)
    assert (await replica_b.get("/v1/me/info", headers=user.headers)).status_code == 401


def _key_lookups(engine) -> tuple[list[str], Callable[[], None]]:
    """The key lookups `engine` runs from now on, and how to stop counting."""
    from sqlalchemy import event

    statements: list[str] = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().startswith("SELECT") and "api_keys.key_hash =" in statement:  # looked up by its hash
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    return statements, lambda: event.remove(engine.sync_engine, "before_cursor_execute", count)


async def test_a_key_used_less_than_once_a_second_is_not_read_again_while_nothing_changes(client, seed: Seeder) -> None:
    """The cache keeps a key as long as no key, user or role changed (checked twice a second,
    in one query for all keys): a caller with a call every few seconds does not wait for the
    database on each of them. A change still drops it."""
    user = await seed.user()
    context = client.app.state.context  # type: ignore[attr-defined]
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200
    lookups, stop = _key_lookups(context.engine)
    try:
        for _ in range(3):
            await asyncio.sleep(1.3)
            assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200
        assert lookups == []
        # Another key of the user is created: nothing cached changes, the key stays.
        assert (await client.post("/v1/me/keys", json={"name": "second"}, headers=user.headers)).status_code == 201
        assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200
        # The user changed: read again.
        assert (await client.patch(f"/v1/admin/users/{user.id}", json={"priority": 3}, headers=ADMIN)).status_code == 204
        assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200
        assert len(lookups) == 1
    finally:
        stop()


async def test_a_burst_on_a_cold_key_reads_the_database_once(client, seed: Seeder) -> None:
    """Fifty requests arriving together with an uncached key share one lookup instead of
    taking fifty database connections."""
    user = await seed.user()
    context = client.app.state.context  # type: ignore[attr-defined]
    context.authenticator.forget_all()
    lookups, stop = _key_lookups(context.engine)
    try:
        responses = await asyncio.gather(*(client.get("/v1/models", headers=user.headers) for _ in range(50)))
    finally:
        stop()
    assert all(r.status_code == 200 for r in responses)
    assert len(lookups) == 1, lookups


async def test_a_key_deleted_while_it_is_being_looked_up_is_not_cached(client, seed: Seeder) -> None:
    user = await seed.user()
    context = client.app.state.context  # type: ignore[attr-defined]
    authenticator = context.authenticator
    authenticator.forget_all()
    lookup = asyncio.ensure_future(authenticator.authenticate(f"Bearer {user.key}"))
    await asyncio.sleep(0)  # the lookup has started
    assert (await client.delete(f"/v1/me/keys/{user.key_id}", headers=user.headers)).status_code == 204
    await lookup  # it may still see the key: it began before the deletion
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 401
