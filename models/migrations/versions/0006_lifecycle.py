"""After the balance (lifecycle.md): the waves' lifecycle settings, participants, training
events and the feeds' cursors, incentive and survey payments with their paid-once index,
survey answers, payout runs, their lease and their sign-offs.

Revision ID: 0006_lifecycle
Revises: 0005_drawn_covering
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_lifecycle"
down_revision: str | Sequence[str] | None = "0005_drawn_covering"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE_PAYMENT = "status IN ('DUE', 'SENDING', 'PAID', 'CONFLICT')"
# name, type, server default: a wave made before these settings has lifecycle.md's defaults.
WAVE_SETTINGS = (
    ("first_training_days", sa.Integer(), "30"),
    ("incentive_amount", sa.BigInteger(), "600000"),
    ("incentive_installments", sa.Integer(), "4"),
    ("incentive_interval_days", sa.Integer(), "30"),
    ("survey_amount", sa.BigInteger(), "50000"),
    ("surveys", sa.Integer(), "3"),
)


def upgrade() -> None:
    with op.batch_alter_table("wave") as batch:
        for name, type_, default in WAVE_SETTINGS:
            batch.add_column(sa.Column(name, type_, nullable=False, server_default=default))

    op.create_table(
        "participant",
        sa.Column("registrant_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("nik", sa.String(), nullable=False),
        sa.Column("card_number", sa.String(), nullable=False),
        sa.Column("credited_amount", sa.BigInteger(), nullable=False),
        sa.Column("credited_on", sa.Date(), nullable=False),
        sa.Column("deadline_on", sa.Date(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("state_on", sa.Date(), nullable=False),
        sa.Column("first_purchase_on", sa.Date(), nullable=True),
        sa.Column("first_completion_on", sa.Date(), nullable=True),
        sa.Column("balance_left", sa.BigInteger(), nullable=False),
        sa.Column("late_purchase", sa.Boolean(), nullable=False),
        sa.Column("orphan_completions", sa.Integer(), nullable=False),
        sa.Column("card_used_at_issuer", sa.Boolean(), nullable=False),
        sa.Column("revoke_reason", sa.String(), nullable=True),
        sa.Column("revoke_status", sa.String(), nullable=True),
        sa.Column("amount_returned", sa.BigInteger(), nullable=True),
        sa.Column("revoked_on", sa.Date(), nullable=True),
        sa.Column("revoke_error", sa.String(), nullable=True),
        sa.Column("events_seen", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("registrant_id"),
        sa.UniqueConstraint("card_number"),
    )
    op.create_index("ix_participant_nik", "participant", ["nik"])
    op.create_index("ix_participant_state", "participant", ["state", "deadline_on"])

    op.create_table(
        "training_event",
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("card_number", sa.String(), nullable=False),
        sa.Column("course_id", sa.String(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "event_id"),
    )
    op.create_index("ix_training_event_card_number", "training_event", ["card_number"])

    op.create_table(
        "feed_cursor",
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("cursor", sa.String(), nullable=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("unreadable", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("platform"),
    )

    op.create_table(
        "payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("registrant_id", sa.Integer(), nullable=False),
        sa.Column("nik", sa.String(), nullable=False),
        sa.Column("benefit", sa.String(), nullable=False),
        sa.Column("installment", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("account", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("checked_on", sa.Date(), nullable=True),
        sa.Column("checks_json", sa.Text(), nullable=True),
        sa.Column("reference", sa.String(), nullable=True),
        sa.Column("run_as_of", sa.Date(), nullable=True),
        sa.Column("transfer_id", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("wave_id", "nik", "benefit", "installment", name="uq_payment"),
    )
    op.create_index(
        "uq_payment_live",
        "payment",
        ["nik", "benefit", "installment"],
        unique=True,
        sqlite_where=sa.text(LIVE_PAYMENT),
        postgresql_where=sa.text(LIVE_PAYMENT),
    )
    op.create_index("ix_payment_status", "payment", ["status", "due_on"])
    op.create_index("ix_payment_registrant", "payment", ["registrant_id"])

    op.create_table(
        "survey_response",
        sa.Column("registrant_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("survey", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("answers_json", sa.Text(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("registrant_id", "survey"),
    )

    op.create_table(
        "payout_run",
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("sign_off", sa.Integer(), nullable=False),
        sa.Column("reruns", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(), nullable=True),
        sa.Column("counts_json", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("as_of"),
    )

    op.create_table(
        "payout_lease",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )

    op.create_table(
        "payout_sign_off",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("approved_by", sa.String(), nullable=False),
        sa.Column("approver_key", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("payments", sa.Integer(), nullable=False),
        sa.Column("total_amount", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("as_of", "approver_key", "digest", name="uq_payout_sign_off_approver"),
    )
    op.create_index("ix_payout_sign_off_as_of", "payout_sign_off", ["as_of"])


def downgrade() -> None:
    for table in (
        "payout_sign_off",
        "payout_lease",
        "payout_run",
        "survey_response",
        "payment",
        "feed_cursor",
        "training_event",
        "participant",
    ):
        op.drop_table(table)
    with op.batch_alter_table("wave") as batch:
        for name, _, _ in WAVE_SETTINGS:
            batch.drop_column(name)
