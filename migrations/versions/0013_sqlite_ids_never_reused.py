"""SQLite: ids are never given again (AUTOINCREMENT), as PostgreSQL's sequences never do

Without it SQLite gives a deleted row's id to the next row made when it was the last one, and
a new user inherited what is kept outside the row under the deleted user's id: their live
budget balance and rate-limit windows, their vector shard; a new collection, a deleted one's
chunks. AUTOINCREMENT can only be declared when a table is created: each table whose id keys
such state is rebuilt (foreign keys are off in migrations, so nothing cascades).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

# Parents before children does not matter here: each rebuild keeps its name and its rows.
TABLES = ('organizations', 'roles', 'users', 'api_keys', 'routers', 'providers', 'policies', 'conversation_sessions',
          'collections', 'documents')


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
