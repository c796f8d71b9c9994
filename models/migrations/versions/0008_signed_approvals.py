"""Signed approvals and a CONFLICT paid once (wave-rules.md, "Sign-off before money" and
"Paid once in the program"): each approval keeps its Ed25519 signature and its key's
fingerprint (nullable: unsigned without an approvers file), and the ledger's paid-once
index counts a CONFLICT credit as live, so that a credit the issuer may hold blocks the
same NIK's credit in another wave.

Revision ID: 0008_signed_approvals
Revises: 0007_portal_hardening
Create Date: 2026-12-09
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_signed_approvals"
down_revision: str | Sequence[str] | None = "0007_portal_hardening"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("prakerja")

# As models/tables.py's LIVE_CREDIT, before and after this revision.
LIVE_BEFORE = "status IN ('PENDING', 'APPLIED')"
LIVE_AFTER = "status IN ('PENDING', 'APPLIED', 'CONFLICT')"
INDEX = "uq_ledger_live_credit"


def _live_index(where: str) -> sa.Index:
    table = sa.Table("ledger", sa.MetaData(), sa.Column("nik"), sa.Column("benefit"))
    return sa.Index(
        INDEX,
        table.c.nik,
        table.c.benefit,
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def _replace_live_index(where: str, fallback: str) -> None:
    """The paid-once index with `where`; where existing rows break it (a CONFLICT beside
    another wave's live credit), the index of `fallback` instead, and the log says so
    without the rows' values, as 0001_baseline does: the program keeps working and
    `prakerja wave reconcile` reports the rows."""
    bind = op.get_bind()
    if INDEX in {i["name"] for i in sa.inspect(bind).get_indexes("ledger")}:
        op.drop_index(INDEX, table_name="ledger")
    for attempt in (where, fallback):
        try:
            # A failed statement aborts a PostgreSQL transaction: only its savepoint is undone.
            with bind.begin_nested():
                _live_index(attempt).create(bind)
            return
        except sa.exc.IntegrityError:
            log.error(
                "index %s (%s) cannot be created: existing ledger rows break it; see "
                "`prakerja wave reconcile`",
                INDEX,
                attempt,
            )


def upgrade() -> None:
    for table in ("sign_off", "payout_sign_off"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("signature", sa.String(), nullable=True))
            batch.add_column(sa.Column("key_fingerprint", sa.String(), nullable=True))
    _replace_live_index(LIVE_AFTER, LIVE_BEFORE)


def downgrade() -> None:
    _replace_live_index(LIVE_BEFORE, LIVE_BEFORE)
    for table in ("payout_sign_off", "sign_off"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_fingerprint")
            batch.drop_column("signature")
