"""Baseline: the program database as the releases before migrations left it.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-01

An empty database gets every table. A database made before migrations (its tables made by
`create_all`, which never changed a table or an index it had made) is brought to exactly
this schema: the nullable columns later releases added, the indexes they added (such as
the ledger's one live credit per NIK and benefit), and the indexes they dropped are
dropped (such as the draw-order index, ix_registrant_draw). The tables are written out
here, not taken from models/tables.py: this revision must stay what it is when the models
change in later revisions.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("prakerja")
LIVE_CREDIT = "status IN ('PENDING', 'APPLIED')"
# Indexes that releases before migrations made and later ones dropped (git history of
# models/tables.py): each costs writes on every state change of millions of rows.
DROPPED_INDEXES = {
    "registrant": (
        "ix_registrant_draw",
        "ix_registrant_kk",
        "ix_registrant_nik",
        "ix_registrant_nik_state",
        "ix_registrant_wave_nik",
    ),
}


def baseline_schema() -> sa.MetaData:
    schema = sa.MetaData()
    sa.Table(
        "wave",
        schema,
        sa.Column("wave_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("reference_date", sa.Date(), nullable=False),
        sa.Column("min_age", sa.Integer(), nullable=False),
        sa.Column("min_test_score", sa.Integer(), nullable=False),
        sa.Column("name_score_min", sa.Integer(), nullable=False),
        sa.Column("household_cap", sa.Integer(), nullable=False),
        sa.Column("allocation", sa.String(), nullable=False),
        sa.Column("lottery_seed", sa.String(), nullable=False),
        sa.Column("lottery_seed_sha256", sa.String(), nullable=False),
        sa.Column("backfill", sa.Boolean(), nullable=False),
        sa.Column("training_balance", sa.BigInteger(), nullable=False),
        sa.Column("rollout_deadline", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("keep_open", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("source_path", sa.String(), nullable=True),
        sa.Column("source_sha256", sa.String(), nullable=True),
        sa.Column("intake_done", sa.Boolean(), nullable=False),
        sa.Column("intake_rows", sa.Integer(), nullable=False),
        sa.Column("drawn_at", sa.DateTime(), nullable=True),
        sa.Column("draw_without_pending", sa.Boolean(), nullable=False),
        sa.Column("pool_size", sa.Integer(), nullable=True),
        sa.Column("pool_digest", sa.String(), nullable=True),
        sa.Column("seats_json", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("portal_indexed_at", sa.DateTime(), nullable=True),
        sa.Column("announced_at", sa.DateTime(), nullable=True),
        sa.Column("announce_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("wave_id"),
    )
    sa.Table(
        "registrant",
        schema,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("registration_id", sa.String(), nullable=True),
        sa.Column("nik", sa.String(), nullable=True),
        sa.Column("kk_number", sa.String(), nullable=True),
        sa.Column("full_name", sa.String(), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("gender", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("email_verified", sa.Boolean(), nullable=True),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("domicile_regency_code", sa.String(), nullable=True),
        sa.Column("province", sa.String(), nullable=True),
        sa.Column("test_score", sa.Integer(), nullable=True),
        sa.Column("payout_provider", sa.String(), nullable=True),
        sa.Column("payout_account", sa.String(), nullable=True),
        sa.Column("registered_at", sa.DateTime(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("identity_answer", sa.Text(), nullable=True),
        sa.Column("identity_at", sa.DateTime(), nullable=True),
        sa.Column("screening_answers", sa.Text(), nullable=True),
        sa.Column("screening_at", sa.DateTime(), nullable=True),
        sa.Column("priority", sa.Boolean(), nullable=False),
        sa.Column("draw_key", sa.String(), nullable=True),
        sa.Column("draw_round", sa.Integer(), nullable=True),
        sa.Column("drawn_at", sa.DateTime(), nullable=True),
        sa.Column("account_status", sa.String(), nullable=True),
        sa.Column("account_at", sa.DateTime(), nullable=True),
        sa.Column("card_number", sa.String(), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.Column("credited_at", sa.DateTime(), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("pending_stage", sa.String(), nullable=True),
        sa.Column("pending_partner", sa.String(), nullable=True),
        sa.Column("pending_error", sa.String(), nullable=True),
        sa.Column("pending_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["wave_id"], ["wave.wave_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("card_number"),
        sa.UniqueConstraint("wave_id", "line", name="uq_registrant_wave_line"),
        sa.Index(
            "ix_registrant_drawn",
            "wave_id",
            "draw_round",
            sqlite_where=sa.text("draw_round IS NOT NULL"),
            postgresql_where=sa.text("draw_round IS NOT NULL"),
        ),
        sa.Index(
            "ix_registrant_drawn_nik",
            "nik",
            sqlite_where=sa.text("draw_round IS NOT NULL"),
            postgresql_where=sa.text("draw_round IS NOT NULL"),
        ),
        sa.Index("ix_registrant_wave_state", "wave_id", "state"),
    )
    sa.Table(
        "ledger",
        schema,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("nik", sa.String(), nullable=False),
        sa.Column("benefit", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("card_number", sa.String(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("transfer_id", sa.String(), nullable=True),
        sa.Column("issuer_reason", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("wave_id", "nik", "benefit", name="uq_ledger_credit"),
        sa.Index("ix_ledger_wave_id", "wave_id"),
        sa.Index(
            "uq_ledger_live_credit",
            "nik",
            "benefit",
            unique=True,
            sqlite_where=sa.text(LIVE_CREDIT),
            postgresql_where=sa.text(LIVE_CREDIT),
        ),
    )
    sa.Table(
        "message",
        schema,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("nik", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("phone", sa.String(), nullable=False),
        sa.Column("template", sa.String(), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.Index("ix_message_wave_status", "wave_id", "status"),
    )
    sa.Table(
        "blacklist",
        schema,
        sa.Column("nik", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("added_by", sa.String(), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("nik"),
    )
    sa.Table(
        "portal_person",
        schema,
        sa.Column("nik", sa.String(), nullable=False),
        sa.Column("wave_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("registrant_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("nik", "wave_id"),
    )
    sa.Table(
        "portal_session",
        schema,
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("nik", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    sa.Table(
        "login_guard",
        schema,
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("requests", sa.String(), nullable=False),
        sa.Column("failures", sa.String(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("code_hash", sa.String(), nullable=True),
        sa.Column("code_expires", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    return schema


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in baseline_schema().sorted_tables:
        if table.name not in present:
            table.create(bind)  # with its indexes
            continue
        _add_missing_columns(bind, inspector, table)
        have = {i["name"] for i in inspector.get_indexes(table.name)}
        for name in DROPPED_INDEXES.get(table.name, ()):
            if name in have:
                op.drop_index(name, table_name=table.name)
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name not in have:
                _create_index(bind, table.name, index)


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: restore the backup taken before")


def _add_missing_columns(bind, inspector, table: sa.Table) -> None:
    have = {c["name"] for c in inspector.get_columns(table.name)}
    for column in table.columns:
        if column.name in have:
            continue
        if not column.nullable:
            raise RuntimeError(
                f"{table.name}.{column.name} is missing and has no value for existing rows: "
                "this database predates every release that can be upgraded"
            )
        op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def _create_index(bind, table_name: str, index: sa.Index) -> None:
    """Creates `index`; a unique one that existing rows break is left out and named in
    the log (without the rows' values), as the releases before did: the program keeps
    working and `prakerja wave reconcile` reports the rows (paid more than once)."""
    if not index.unique:
        index.create(bind)
        return
    try:
        # A failed statement aborts a PostgreSQL transaction: only its savepoint is undone.
        with bind.begin_nested():
            index.create(bind)
    except sa.exc.IntegrityError:
        log.error(
            "index %s cannot be created: existing %s rows break it; see `prakerja wave reconcile`",
            index.name,
            table_name,
        )
