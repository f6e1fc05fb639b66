"""multi-node runs: runs.nodes and runs.gpus_per_node

A run asks for ``nodes`` x ``gpus_per_node``; ``runs.gpus`` stays the run's total (nodes x
gpus_per_node), which single-host runs already used. Existing runs are single-node runs whose
GPUs were all on one host, so ``gpus_per_node`` starts as their ``gpus``. A worker with the local
launcher (torchrun on its own host) only claims single-node runs; the Slurm launcher runs any
(app/launchers/slurm.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch_op:
        batch_op.add_column(sa.Column('nodes', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('gpus_per_node', sa.Integer(), server_default='0', nullable=False))
    op.execute("UPDATE runs SET gpus_per_node = gpus")


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch_op:
        batch_op.drop_column('gpus_per_node')
        batch_op.drop_column('nodes')
