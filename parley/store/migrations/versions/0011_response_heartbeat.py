"""Responses get a heartbeat: the process running a response renews `heartbeat_at` while it is
open, and one that stops renewing it (killed, its host gone) leaves it to be marked `failed` by
any process serving `/v1`, instead of `in_progress` for ever. The sweeper looks for open rows
by status and heartbeat, hence the index.

Rows from before this migration keep a NULL heartbeat; those still open are judged by their
`created_at` (a response that began a lease ago and was never renewed is orphaned).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_responses_open", ["status", "heartbeat_at"])


def downgrade() -> None:
    with op.batch_alter_table("responses") as batch_op:
        batch_op.drop_index("ix_responses_open")
        batch_op.drop_column("heartbeat_at")
