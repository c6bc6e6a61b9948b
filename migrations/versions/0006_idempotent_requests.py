"""answers remembered for balance changes sent with an Idempotency-Key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idempotent_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.Text(), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotent_requests')),
    sa.UniqueConstraint('scope', 'key', name='uq_idempotent_requests_scope_key')
    )
    op.create_index(op.f('ix_idempotent_requests_created'), 'idempotent_requests', ['created'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_idempotent_requests_created'), table_name='idempotent_requests')
    op.drop_table('idempotent_requests')
