"""tasks.leased_until: a task whose leases fill it is skipped by "next task" until the first expires

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:45:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import app.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leased_until', app.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('leased_until')
