"""The upstream context's size at a conversation's last turn, `conversations.last_input_tokens`
(the upstream's `usage.input_tokens` of the turn's last call): read with the conversation row
the turn loads anyway, it tells the next turn to prune a long chat without a query of its own.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.add_column(sa.Column("last_input_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_column("last_input_tokens")
