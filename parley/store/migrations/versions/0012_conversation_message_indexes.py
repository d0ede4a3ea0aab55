"""A conversation's messages found by what a turn and a send ask of them, not by walking them
all: its waiting inbound messages in order (the turn's read, and whether more wait), and its
inbound messages by time (the customer's rate window, and when the customer last wrote, which
each send reads for the reply window). Before, each of these walked every message of the
conversation by `(conversation_id, sequence_no)`, so a turn cost more the longer the
conversation.

Building them reads the whole table once; on PostgreSQL writes to `messages` wait for it.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_waiting", "messages", ["conversation_id", "direction", "status", "sequence_no"]
    )
    op.create_index(
        "ix_messages_inbound_time", "messages", ["conversation_id", "direction", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_messages_inbound_time", table_name="messages")
    op.drop_index("ix_messages_waiting", table_name="messages")
