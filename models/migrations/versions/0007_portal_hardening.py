"""The dashboard behind a proxy and under attack (portal.md): the secret kept in the
database when PRAKERJA_PORTAL_SECRET is unset, wrong codes per minute with the alert's
last time, and indexes over a session's last use and a guard row's last change, so that
the sweep finds what expired without reading whole tables.

Revision ID: 0007_portal_hardening
Revises: 0006_lifecycle
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_portal_hardening"
down_revision: str | Sequence[str] | None = "0006_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_portal_session_last_seen", "portal_session", "last_seen"),
    ("ix_login_guard_updated_at", "login_guard", "updated_at"),
)


def upgrade() -> None:
    op.create_table(
        "portal_secret",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "portal_guess_minute",
        sa.Column("minute", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("minute"),
    )
    op.create_table(
        "portal_alert",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("raised_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _column in INDEXES:
        op.drop_index(name, table_name=table)
    op.drop_table("portal_alert")
    op.drop_table("portal_guess_minute")
    op.drop_table("portal_secret")
