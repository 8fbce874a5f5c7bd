"""leader election: fencing token on the scheduler lease (issue 8)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scheduler_lease', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token', sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('scheduler_lease', schema=None) as batch_op:
        batch_op.drop_column('token')
