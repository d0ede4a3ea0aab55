"""Conversations get a mode (``agent`` or ``human``) with who set it, when and why; signed
handoff notices wait in their own table until the worker posts them; the admin listing's order
(latest activity, then id) and the human-mode conversations are indexed.

`status` keeps ``active`` and ``closed``: rows that were ``handoff`` become active in human
mode, changed when they were handed off (by whom is not known: assignee stays empty). A
conversation that never had a message takes its creation time as its latest activity, so that
the listing's order has no gaps.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.add_column(
            sa.Column("mode", sa.String(length=16), nullable=False, server_default="agent")
        )
        batch_op.add_column(sa.Column("assignee", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("mode_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("mode_reason", sa.String(length=255), nullable=True))
    op.execute(
        "UPDATE conversations SET mode = 'human', status = 'active', "
        "mode_changed_at = handed_off_at WHERE status = 'handoff'"
    )
    op.execute(
        "UPDATE conversations SET last_message_at = created_at WHERE last_message_at IS NULL"
    )
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.create_index("ix_conversations_activity", ["last_message_at", "id"])
        batch_op.create_index("ix_conversations_mode", ["mode", "mode_changed_at"])

    op.create_table(
        "handoff_notices",
        sa.Column("id", ID, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("assignee", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_handoff_notices_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoff_notices")),
    )
    with op.batch_alter_table("handoff_notices") as batch_op:
        batch_op.create_index(batch_op.f("ix_handoff_notices_conversation_id"), ["conversation_id"])
        batch_op.create_index("ix_handoff_notices_due", ["sent_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("handoff_notices")
    op.execute(
        "UPDATE conversations SET status = 'handoff' WHERE mode = 'human' AND status = 'active'"
    )
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_index("ix_conversations_mode")
        batch_op.drop_index("ix_conversations_activity")
        for name in ("mode_reason", "mode_changed_at", "assignee", "mode"):
            batch_op.drop_column(name)
