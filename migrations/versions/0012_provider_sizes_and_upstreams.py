"""providers: model sizes in fractions of a billion parameters (a 270M model is 0.27); the
AWS region of a bedrock provider and the api-version of an azure one

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

COLUMNS = ('model_total_params', 'model_active_params')


def upgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.alter_column(column, existing_type=sa.BigInteger(), type_=sa.Double(), existing_nullable=False,
                                  postgresql_using=f'{column}::double precision')
        batch_op.add_column(sa.Column('region', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('api_version', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_column('api_version')
        batch_op.drop_column('region')
        for column in COLUMNS:
            batch_op.alter_column(column, existing_type=sa.Double(), type_=sa.BigInteger(), existing_nullable=False,
                                  postgresql_using=f'round({column})::bigint')
