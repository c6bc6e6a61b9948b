"""models: routers, aliases, providers; usage

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('routers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('load_balancing_strategy', sa.String(length=32), nullable=False),
    sa.Column('cost_prompt_micros', sa.BigInteger(), nullable=False),
    sa.Column('cost_completion_micros', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_routers')),
    sa.UniqueConstraint('name', name=op.f('uq_routers_name'))
    )
    op.create_table('usage',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('organization_id', sa.Integer(), nullable=True),
    sa.Column('key_id', sa.Integer(), nullable=True),
    sa.Column('key_name', sa.String(length=255), nullable=True),
    sa.Column('router_id', sa.Integer(), nullable=True),
    sa.Column('provider_id', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=255), nullable=True),
    sa.Column('endpoint', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
    sa.Column('total_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost_nanos', sa.BigInteger(), nullable=False),
    sa.Column('kwh_min', sa.Double(), nullable=False),
    sa.Column('kwh_max', sa.Double(), nullable=False),
    sa.Column('kgco2eq_min', sa.Double(), nullable=False),
    sa.Column('kgco2eq_max', sa.Double(), nullable=False),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('ttft_ms', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage')),
    sa.UniqueConstraint('request_id', name=op.f('uq_usage_request_id'))
    )
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_created'), ['created'], unique=False)
        batch_op.create_index(batch_op.f('ix_usage_user_id'), ['user_id'], unique=False)

    op.create_table('router_aliases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('router_id', sa.Integer(), nullable=False),
    sa.Column('alias', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['router_id'], ['routers.id'], name=op.f('fk_router_aliases_router_id_routers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_router_aliases')),
    sa.UniqueConstraint('alias', name=op.f('uq_router_aliases_alias'))
    )
    with op.batch_alter_table('router_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_router_aliases_router_id'), ['router_id'], unique=False)

    op.create_table('providers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('router_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('key_encrypted', sa.String(length=4096), nullable=True),
    sa.Column('timeout', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=255), nullable=False),
    sa.Column('model_hosting_zone', sa.String(length=3), nullable=False),
    sa.Column('model_total_params', sa.BigInteger(), nullable=False),
    sa.Column('model_active_params', sa.BigInteger(), nullable=False),
    sa.Column('qos_metric', sa.String(length=32), nullable=True),
    sa.Column('qos_limit', sa.Double(), nullable=True),
    sa.Column('vector_size', sa.Integer(), nullable=True),
    sa.Column('max_context_length', sa.Integer(), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['router_id'], ['routers.id'], name=op.f('fk_providers_router_id_routers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_providers_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_providers')),
    sa.UniqueConstraint('router_id', 'url', 'model_name', name='uq_providers_router_url_model')
    )
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_providers_router_id'), ['router_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_providers_router_id'))

    op.drop_table('providers')
    with op.batch_alter_table('router_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_router_aliases_router_id'))

    op.drop_table('router_aliases')
    with op.batch_alter_table('usage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_usage_user_id'))
        batch_op.drop_index(batch_op.f('ix_usage_created'))

    op.drop_table('usage')
    op.drop_table('routers')
