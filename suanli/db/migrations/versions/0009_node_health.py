"""node health: node events, idle allocations (issue 7)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('node_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('device_index', sa.Integer(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], name=op.f('fk_node_events_node_id_nodes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_events'))
    )
    with op.batch_alter_table('node_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_events_node_id'), ['node_id'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idle_since', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topology', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('ray_node_id', sa.String(length=64), server_default='', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('ray_node_id')
        batch_op.drop_column('topology')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('idle_since')
    with op.batch_alter_table('node_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_events_node_id'))
    op.drop_table('node_events')
