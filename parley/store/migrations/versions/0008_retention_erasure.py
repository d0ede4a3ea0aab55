"""Retention and erasure: the queue of upstream objects to delete and the erasures' audit
records. The retention sweep reads conversations by last activity through 0007's
`ix_conversations_activity`.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "upstream_deletions",
        sa.Column("id", Id, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_deletions")),
        sa.UniqueConstraint("kind", "object_id", name=op.f("uq_upstream_deletions_kind_object_id")),
    )
    op.create_index(
        op.f("ix_upstream_deletions_next_attempt_at"),
        "upstream_deletions",
        ["next_attempt_at"],
    )
    op.create_table(
        "erasures",
        sa.Column("id", Id, nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("channel_id_hash", sa.String(length=64), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("outbox", sa.Integer(), nullable=False),
        sa.Column("responses", sa.Integer(), nullable=False),
        sa.Column("inbox", sa.Integer(), nullable=False),
        sa.Column("upstream", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_index(op.f("ix_erasures_contact_id"), "erasures", ["contact_id"])
    op.create_index(op.f("ix_erasures_channel_id_hash"), "erasures", ["channel_id_hash"])


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_table("upstream_deletions")
