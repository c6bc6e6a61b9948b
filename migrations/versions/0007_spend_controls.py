"""spend controls: budgets and allowances on keys, users and organisations; key limits, models,
tags and revocation; organisation models; the ledger for every budget

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BUDGET = ('budget_nanos', 'allowance_nanos', 'budget_period', 'period_start')


def _budget_columns(batch_op, with_budget: bool) -> None:
    if with_budget:
        batch_op.add_column(sa.Column('budget_nanos', sa.BigInteger(), nullable=True))
    batch_op.add_column(sa.Column('allowance_nanos', sa.BigInteger(), nullable=True))
    batch_op.add_column(sa.Column('budget_period', sa.String(length=8), nullable=True))
    batch_op.add_column(sa.Column('period_start', sa.DateTime(timezone=True), nullable=True))


def upgrade() -> None:
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        _budget_columns(batch_op, with_budget=True)
        batch_op.add_column(sa.Column('models', sa.JSON(), nullable=True))
    with op.batch_alter_table('users', schema=None) as batch_op:
        _budget_columns(batch_op, with_budget=False)
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        _budget_columns(batch_op, with_budget=True)
        batch_op.add_column(sa.Column('limits', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('models', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('revoked', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoked_reason', sa.String(length=1000), nullable=True))
    with op.batch_alter_table('budget_changes', schema=None) as batch_op:
        batch_op.alter_column('user_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('key_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('organization_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_budget_changes_key_id'), ['key_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_budget_changes_organization_id'), ['organization_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_budget_changes_key_id_api_keys'), 'api_keys', ['key_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_budget_changes_organization_id_organizations'), 'organizations',
                                    ['organization_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('budget_changes', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_budget_changes_organization_id_organizations'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_budget_changes_key_id_api_keys'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_budget_changes_organization_id'))
        batch_op.drop_index(batch_op.f('ix_budget_changes_key_id'))
        batch_op.drop_column('organization_id')
        batch_op.drop_column('key_id')
        batch_op.alter_column('user_id', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        for column in ('revoked_reason', 'revoked', 'tags', 'models', 'limits', *BUDGET):
            batch_op.drop_column(column)
    with op.batch_alter_table('users', schema=None) as batch_op:
        for column in BUDGET[1:]:
            batch_op.drop_column(column)
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        for column in ('models', *BUDGET):
            batch_op.drop_column(column)
