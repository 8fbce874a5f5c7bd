"""identity: members, tokens, node tokens (issue 6, identity)

Removed members are disabled, not deleted (their jobs and audit rows keep naming them);
agents may be bound to one node; tokens remember when they were last used.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN / CREATE INDEX (no batch): SQLite does both in place, without copying
    # `users`, which every job and token row references.
    op.add_column('users', sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('users', sa.Column('node', sa.String(length=128), nullable=True))
    op.create_index(op.f('ix_users_node'), 'users', ['node'], unique=True)
    op.add_column('api_tokens', sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_api_tokens_user_id', 'api_tokens', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_api_tokens_user_id', table_name='api_tokens')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
    op.drop_index(op.f('ix_users_node'), table_name='users')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('node')
        batch_op.drop_column('disabled_at')
