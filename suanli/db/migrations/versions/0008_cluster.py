"""cluster: drain reasons, scheduler lease (issue 6, cluster)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('drain_reason', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('drained_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('drained_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('scheduler_lease',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduler_lease'))
    )


def downgrade() -> None:
    op.drop_table('scheduler_lease')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('drained_at')
        batch_op.drop_column('drained_by')
        batch_op.drop_column('drain_reason')
