"""skip notes: a labeler's own words when skipping or reporting a task

``assignments.skip_note`` keeps the free text a labeler gives with a skip ("other: ..." or any
detail), next to ``skip_reason``, so an admin can count and read skips per reason. The reason
"cannot_judge" joins the existing ones (a string column, no constraint to change). A skipped
task's prompt already leaves that labeler's queue in both lease engines (rlhf_lease_next of
migration 0004/0006 and the Python path), so the lease SQL is unchanged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 06:55:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('assignments') as batch_op:
        batch_op.add_column(sa.Column('skip_note', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('assignments') as batch_op:
        batch_op.drop_column('skip_note')
