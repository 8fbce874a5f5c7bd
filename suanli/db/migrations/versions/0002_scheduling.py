"""scheduling: shares, quotas, priority classes, usage, preemption

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('priority_classes',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Numeric(precision=6, scale=4), nullable=False),
    sa.Column('preemptible', sa.Boolean(), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_priority_classes'))
    )
    op.create_table('quotas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('scope_id', sa.Integer(), nullable=False),
    sa.Column('accelerator_type', sa.String(length=64), nullable=False),
    sa.Column('guaranteed', sa.Integer(), nullable=False),
    sa.Column('limit', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['accelerator_type'], ['accelerator_types.name'], name=op.f('fk_quotas_accelerator_type_accelerator_types')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quotas')),
    sa.UniqueConstraint('scope', 'scope_id', 'accelerator_type', name=op.f('uq_quotas_scope'))
    )
    op.create_table('usage',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('units', sa.Float(), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_usage_project_id_projects')),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_usage'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority_class', sa.String(length=32), server_default='normal', nullable=False))
        batch_op.add_column(sa.Column('requeue', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('restart_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('reason_code', sa.String(length=32), server_default='', nullable=False))
        batch_op.add_column(sa.Column('priority', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('priority_factors', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('estimated_start_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('stop_by', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('device_milli', sa.Integer(), server_default='1000', nullable=False))

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shares', sa.Integer(), server_default='1', nullable=False))

    # The standard priority classes (admins may change values and add classes).
    classes = sa.table('priority_classes', sa.column('name', sa.String), sa.column('value', sa.Numeric),
                       sa.column('preemptible', sa.Boolean), sa.column('description', sa.String))
    op.bulk_insert(classes, [
        {'name': 'high', 'value': 1, 'preemptible': False, 'description': 'urgent work'},
        {'name': 'normal', 'value': 0.5, 'preemptible': False, 'description': 'the default'},
        {'name': 'low', 'value': 0.25, 'preemptible': False, 'description': 'runs when nothing else waits'},
        {'name': 'preemptible', 'value': 0, 'preemptible': True, 'description': 'opportunistic: preempted first'},
    ])



def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('shares')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('device_milli')
        batch_op.drop_column('stop_by')
        batch_op.drop_column('estimated_start_at')
        batch_op.drop_column('priority_factors')
        batch_op.drop_column('priority')
        batch_op.drop_column('reason_code')
        batch_op.drop_column('restart_count')
        batch_op.drop_column('requeue')
        batch_op.drop_column('priority_class')

    op.drop_table('usage')
    op.drop_table('quotas')
    op.drop_table('priority_classes')
