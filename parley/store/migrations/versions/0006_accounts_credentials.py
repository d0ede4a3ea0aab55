"""Accounts with their own credentials and settings: app secret and verify token (encrypted,
like the access token), configured / enabled / removed, agent profile, model and send rate.

Rows that exist already were made on first sight of a webhook, so they stay unconfigured:
served with the environment's defaults, as before.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (
    "app_secret",
    "verify_token",
    "configured",
    "enabled",
    "profile",
    "model",
    "send_rate",
    "updated_at",
    "removed_at",
)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("app_secret", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("verify_token", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("configured", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("profile", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("model", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("send_rate", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
