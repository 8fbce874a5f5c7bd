"""fractional device shares

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A device shared by fractional jobs has a claim row without a job (see models).
    with op.batch_alter_table('device_claims', schema=None) as batch_op:
        batch_op.alter_column('job_id',
               existing_type=sa.INTEGER(),
               nullable=True)

    op.create_table('device_shares',
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('device_index', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('milli', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_device_shares_job_id_jobs')),
    sa.ForeignKeyConstraint(['node_id', 'device_index'], ['device_claims.node_id', 'device_claims.device_index'], name=op.f('fk_device_shares_node_id_device_claims')),
    sa.PrimaryKeyConstraint('node_id', 'device_index', 'job_id', name=op.f('pk_device_shares'))
    )
    with op.batch_alter_table('device_shares', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_shares_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('device_claims', schema=None) as batch_op:
        batch_op.alter_column('job_id',
               existing_type=sa.INTEGER(),
               nullable=False)

    with op.batch_alter_table('device_shares', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_shares_job_id'))

    op.drop_table('device_shares')
