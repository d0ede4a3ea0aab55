"""Ids are never reused on SQLite: `AUTOINCREMENT` on the tables whose ids are shown or that
others refer to by identity (accounts, contacts, conversations, messages, users, api_tokens).

Without it SQLite gives the next row the highest id again once that row is deleted: a user
created after the newest one was deleted got its id, and with it the old user's API account
(`accounts.external_id` is the user's id), contact and messages; likewise a contact after an
erasure, a conversation after retention. SQLite cannot add AUTOINCREMENT in place, so each
table is rebuilt (copied, dropped, renamed) with its rows, ids, indexes and foreign keys.
Alembic's connection runs with foreign keys off (as SQLite's default), so dropping a parent
table during its rebuild cascades nowhere; `PRAGMA foreign_key_check` then confirms every
reference still holds. The counter starts at the highest id present: an id deleted before
this migration may still be given once.

PostgreSQL's identity sequences never go back: nothing to do there.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("accounts", "contacts", "conversations", "messages", "users", "api_tokens")


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)


def _rebuild(*, autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.execute(sa.text("PRAGMA foreign_keys")).scalar():
        # Dropping a parent table would cascade-delete its children's rows.
        raise RuntimeError("migration 0010 must run with SQLite foreign keys off")
    broken_before = len(bind.execute(sa.text("PRAGMA foreign_key_check")).fetchall())
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
    broken = len(bind.execute(sa.text("PRAGMA foreign_key_check")).fetchall())
    if broken > broken_before:
        raise RuntimeError(f"migration 0010 broke {broken - broken_before} foreign key references")
