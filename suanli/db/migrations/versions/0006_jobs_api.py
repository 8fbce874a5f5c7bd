"""jobs API: idempotency keys, holds (issue 6, jobs)

Adds the submit's `Idempotency-Key` (unique per user) and the hash of the spec it came
with, and an index for listing by submit time. HELD is a new value of `jobs.status`
(a String(16) column): no schema change; a downgrade puts held jobs back in the queue
(PENDING), the only status the older code knows for them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('spec_sha256', sa.String(length=64), nullable=True))
        batch_op.create_index('ux_jobs_user_idempotency_key', ['user_id', 'idempotency_key'], unique=True)
        batch_op.create_index('ix_jobs_submitted_at', ['submitted_at'], unique=False)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'PENDING', reason = 'released: schema downgraded' WHERE status = 'HELD'")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_submitted_at')
        batch_op.drop_index('ux_jobs_user_idempotency_key')
        batch_op.drop_column('spec_sha256')
        batch_op.drop_column('idempotency_key')
