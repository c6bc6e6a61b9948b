"""usage reports: tags on usage records, daily roll-ups, a user's and a key's records by time

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

DIMENSIONS = {'user': 'user_id', 'key': 'key_id', 'organization': 'organization_id', 'router': 'router_id'}


def upgrade() -> None:
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tag', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('end_user', sa.String(length=255), nullable=True))
        batch_op.drop_index('ix_usage_user_id')
        batch_op.create_index('ix_usage_user_id_created', ['user_id', 'created', 'id'], unique=False)
        batch_op.create_index('ix_usage_key_id_created', ['key_id', 'created', 'id'], unique=False)
        batch_op.create_index('ix_usage_errors', ['status', 'created'], unique=False,
                              postgresql_where=sa.text('status >= 400'), sqlite_where=sa.text('status >= 400'))
    op.create_table('usage_daily',
    sa.Column('dimension', sa.String(length=16), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.Column('requests', sa.BigInteger(), nullable=False),
    sa.Column('errors', sa.BigInteger(), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost_nanos', sa.BigInteger(), nullable=False),
    sa.Column('kwh_min', sa.Double(), nullable=False),
    sa.Column('kwh_max', sa.Double(), nullable=False),
    sa.Column('kgco2eq_min', sa.Double(), nullable=False),
    sa.Column('kgco2eq_max', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('dimension', 'day', 'group_id', 'tag', name=op.f('pk_usage_daily'))
    )
    op.create_index('ix_usage_daily_group', 'usage_daily', ['dimension', 'group_id', 'day'], unique=False)
    # The records already there, summed as the usage writer sums each batch from now on (one
    # pass per dimension: a few seconds per million records on PostgreSQL).
    day = "date(created)" if op.get_bind().dialect.name == 'sqlite' else "CAST(created AT TIME ZONE 'UTC' AS DATE)"
    for dimension, column in DIMENSIONS.items():
        op.execute(
            "INSERT INTO usage_daily (dimension, day, group_id, tag, requests, errors, prompt_tokens, completion_tokens, "
            "cost_nanos, kwh_min, kwh_max, kgco2eq_min, kgco2eq_max) "
            f"SELECT '{dimension}', {day}, COALESCE({column}, 0), COALESCE(tag, ''), COUNT(*), "
            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_nanos), "
            "SUM(kwh_min), SUM(kwh_max), SUM(kgco2eq_min), SUM(kgco2eq_max) "
            f"FROM usage GROUP BY {day}, COALESCE({column}, 0), COALESCE(tag, '')"
        )


def downgrade() -> None:
    op.drop_index('ix_usage_daily_group', table_name='usage_daily')
    op.drop_table('usage_daily')
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_errors')
        batch_op.drop_index('ix_usage_key_id_created')
        batch_op.drop_index('ix_usage_user_id_created')
        batch_op.create_index('ix_usage_user_id', ['user_id'], unique=False)
        batch_op.drop_column('end_user')
        batch_op.drop_column('tag')
