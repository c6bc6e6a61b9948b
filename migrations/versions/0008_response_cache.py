"""the response cache: per router (ttl, temperature, a hit's price), per key (opt-out), and the
usage records of hits

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('routers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cache_ttl_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cache_any_temperature', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('cost_cache_hit_micros', sa.BigInteger(), nullable=False, server_default='0'))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('use_cache', sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cached', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.drop_column('cached')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('use_cache')
    with op.batch_alter_table('routers', schema=None) as batch_op:
        batch_op.drop_column('cost_cache_hit_micros')
        batch_op.drop_column('cache_any_temperature')
        batch_op.drop_column('cache_ttl_seconds')
