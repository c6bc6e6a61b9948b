"""budgets in billionths; ledger of budget changes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('budget_nanos', sa.BigInteger(), nullable=True))
    op.execute('UPDATE users SET budget_nanos = budget_micros * 1000')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('budget_micros')
    op.create_table('budget_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount_nanos', sa.BigInteger(), nullable=True),
    sa.Column('balance_nanos', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.String(length=1000), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_budget_changes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budget_changes'))
    )
    with op.batch_alter_table('budget_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_budget_changes_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('budget_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_budget_changes_user_id'))
    op.drop_table('budget_changes')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('budget_micros', sa.BigInteger(), nullable=True))
    op.execute('UPDATE users SET budget_micros = budget_nanos / 1000')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('budget_nanos')
