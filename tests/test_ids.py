"""Ids are never given twice, on SQLite as on PostgreSQL: what is kept outside a row under its
id (a live budget balance, rate-limit windows, a vector shard) never reaches a row made after
it was deleted. SQLite without AUTOINCREMENT gave a deleted row's id to the next one made."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from conftest import ADMIN, Models
from test_budgets import BODY
from test_spend_controls import priced

from api.db.migrate import upgrade_database


async def test_a_user_made_after_one_was_deleted_starts_with_their_own_budget(client, models: Models, upstream) -> None:
    router = await priced(models, upstream)
    gone = await models.user_for(router, budget=0.00003)  # one call's reservation, not two
    assert (await client.post("/v1/chat/completions", json=BODY, headers=gone.headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=BODY, headers=gone.headers)).status_code == 402
    assert (await client.delete(f"/v1/admin/users/{gone.id}", headers=ADMIN)).status_code == 204

    newcomer = await models.user_for(router, budget=0.00003)
    assert newcomer.id != gone.id
    response = await client.post("/v1/chat/completions", json=BODY, headers=newcomer.headers)
    assert response.status_code == 200, response.text


def test_the_upgrade_keeps_every_row_and_its_links(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/tollgate.db"
    upgrade_database(url, "0012")
    with closing(sqlite3.connect(tmp_path / "tollgate.db")) as db:
        db.executescript("""
            INSERT INTO roles (id, name, permissions, created, updated) VALUES (1, 'r', '[]', '2026-01-01', '2026-01-01');
            INSERT INTO users (id, email, password_hash, role_id, priority, created, updated)
                VALUES (1, 'a@x.org', 'h', 1, 0, '2026-01-01', '2026-01-01'), (2, 'b@x.org', 'h', 1, 0, '2026-01-01', '2026-01-01');
            INSERT INTO api_keys (id, user_id, name, key_hash, hint, created) VALUES (7, 2, 'k', 'hash', 'tg-…', '2026-01-01');
            DELETE FROM users WHERE id = 1;
        """)
        db.commit()
    upgrade_database(url)
    with closing(sqlite3.connect(tmp_path / "tollgate.db")) as db:
        db.execute("PRAGMA foreign_keys=ON")
        assert db.execute("SELECT id, email FROM users").fetchall() == [(2, "b@x.org")]
        assert db.execute("SELECT id, user_id FROM api_keys").fetchall() == [(7, 2)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        db.execute("INSERT INTO users (email, password_hash, role_id, priority, created, updated) "
                   "VALUES ('c@x.org', 'h', 1, 0, '2026-01-01', '2026-01-01')")
        assert db.execute("SELECT max(id) FROM users").fetchone() == (3,)
        db.execute("DELETE FROM users WHERE id = 3")
        db.execute("INSERT INTO users (email, password_hash, role_id, priority, created, updated) "
                   "VALUES ('d@x.org', 'h', 1, 0, '2026-01-01', '2026-01-01')")
        assert db.execute("SELECT id FROM users WHERE email = 'd@x.org'").fetchone() == (4,)  # not 3 again
        db.execute("DELETE FROM users WHERE id = 2")  # its key goes with it, as before
        assert db.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
