"""batch guidelines and prompt selection

``batches.guidelines``: Markdown instructions an admin writes for a batch; every task of the
batch shows them to the labeler. ``batches.selection``: the prompt selection the batch was built
from (split, category, source, import tag, prompt ids), shown on the batches page.
``prompts.import_tag``: which import a prompt came from (a name given at import, or one made of
the import's time; the demo's prompts carry "demo"), so a batch can be built from one import and
a plain new batch never sweeps in the demo prompts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 06:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batches') as batch_op:
        batch_op.add_column(sa.Column('guidelines', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('selection', sa.JSON(), nullable=True))
    with op.batch_alter_table('prompts') as batch_op:
        batch_op.add_column(sa.Column('import_tag', sa.String(length=100), nullable=True))
        batch_op.create_index('ix_prompts_import_tag', ['import_tag'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('prompts') as batch_op:
        batch_op.drop_index('ix_prompts_import_tag')
        batch_op.drop_column('import_tag')
    with op.batch_alter_table('batches') as batch_op:
        batch_op.drop_column('selection')
        batch_op.drop_column('guidelines')
