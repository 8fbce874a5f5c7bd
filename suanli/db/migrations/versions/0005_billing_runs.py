"""billing_runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('run', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('accelerator_type', sa.String(length=64), nullable=False),
    sa.Column('devices_milli', sa.BigInteger(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.BigInteger(), nullable=False),
    sa.Column('price_fen_per_device_hour', sa.BigInteger(), nullable=False),
    sa.Column('cost_fen', sa.BigInteger(), nullable=False),
    sa.Column('cash_fen', sa.BigInteger(), nullable=False),
    sa.Column('subsidy_fen', sa.BigInteger(), nullable=False),
    sa.Column('programs', sa.JSON(), nullable=False),
    sa.Column('center_fault', sa.Boolean(), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_billing_runs_job_id_jobs')),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_billing_runs_org_id_orgs')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_billing_runs_project_id_projects')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_billing_runs_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_runs')),
    sa.UniqueConstraint('job_id', 'run', name=op.f('uq_billing_runs_job_id'))
    )
    with op.batch_alter_table('billing_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_runs_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_runs_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_billing_runs_settled_at'), ['settled_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('billing_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_runs_settled_at'))
        batch_op.drop_index(batch_op.f('ix_billing_runs_org_id'))
        batch_op.drop_index(batch_op.f('ix_billing_runs_job_id'))

    op.drop_table('billing_runs')
