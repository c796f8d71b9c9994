"""The program database: waves, registrants with their evidence, the ledger, the SMS outbox.

One registrant row per data row of a wave's export; its `state` says where it is and its
evidence columns say what every partner answered and when (for `explain`). Datetimes
are naive UTC, stored the same way on SQLite and PostgreSQL.
"""

from datetime import date, datetime

from sqlalchemy import BigInteger, DateTime, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from models.enums import LedgerStatus, MessageStatus, State, WaveStatus
from rules.settings import defaults

# The wave settings' defaults are defined once, by rules.settings.WaveSettings.
WAVE_DEFAULTS = defaults()


class Wave(SQLModel, table=True):
    wave_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    quota: int
    reference_date: date
    min_age: int = WAVE_DEFAULTS["min_age"]
    min_test_score: int = WAVE_DEFAULTS["min_test_score"]
    name_score_min: int = WAVE_DEFAULTS["name_score_min"]
    household_cap: int = WAVE_DEFAULTS["household_cap"]
    allocation: str = WAVE_DEFAULTS["allocation"]
    lottery_seed: str
    lottery_seed_sha256: str
    backfill: bool = WAVE_DEFAULTS["backfill"]
    training_balance: int = Field(default=WAVE_DEFAULTS["training_balance"], sa_type=BigInteger)
    rollout_deadline: datetime = Field(sa_type=DateTime)
    status: str = WaveStatus.OPEN
    keep_open: bool = False
    created_at: datetime = Field(sa_type=DateTime)
    closed_at: datetime | None = Field(default=None, sa_type=DateTime)
    source_path: str | None = None
    source_sha256: str | None = None
    intake_done: bool = False
    intake_rows: int = 0
    drawn_at: datetime | None = Field(default=None, sa_type=DateTime)
    draw_without_pending: bool = False
    pool_size: int | None = None
    pool_digest: str | None = None
    seats_json: str | None = Field(default=None, sa_type=Text)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = Field(default=None, sa_type=DateTime)
    # The registrant dashboard (portal.md): its index of the wave's NIKs, built after
    # intake, and the announcement that lifts the embargo on the wave's results.
    portal_indexed_at: datetime | None = Field(default=None, sa_type=DateTime)
    announced_at: datetime | None = Field(default=None, sa_type=DateTime)
    announce_message: str | None = Field(default=None, sa_type=Text)
    # Approvers needed before any credit (wave-rules.md, "Sign-off before money"); NULL in
    # a database from before the setting means 0.
    sign_off: int | None = Field(default=WAVE_DEFAULTS["sign_off"])
    # lifecycle.md's settings; a wave from before them has the defaults (server defaults).
    first_training_days: int = Field(
        default=WAVE_DEFAULTS["first_training_days"], sa_column_kwargs={"server_default": "30"}
    )
    incentive_amount: int = Field(
        default=WAVE_DEFAULTS["incentive_amount"],
        sa_type=BigInteger,
        sa_column_kwargs={"server_default": "600000"},
    )
    incentive_installments: int = Field(
        default=WAVE_DEFAULTS["incentive_installments"], sa_column_kwargs={"server_default": "4"}
    )
    incentive_interval_days: int = Field(
        default=WAVE_DEFAULTS["incentive_interval_days"], sa_column_kwargs={"server_default": "30"}
    )
    survey_amount: int = Field(
        default=WAVE_DEFAULTS["survey_amount"],
        sa_type=BigInteger,
        sa_column_kwargs={"server_default": "50000"},
    )
    surveys: int = Field(default=WAVE_DEFAULTS["surveys"], sa_column_kwargs={"server_default": "3"})


# The partial index of the waitlisted (written as SQLite needs it to match the queries').
WAITLISTED = "state = 'WAITLISTED'"


class Registrant(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("wave_id", "line", name="uq_registrant_wave_line"),
        # Few indexes, and none on columns every stage rewrites except `state`: each
        # one is paid on every state change of millions of rows. No index covers every
        # NIK: random inserts into one doubled the cost of intake at a million rows.
        # Duplicates are found by sorting (tasks/intake.py), and NIK lookups go through
        # the small partial indexes of drawn registrants below. Nor is the draw order
        # indexed: inserting 2 million random sha256 keys into an index doubled the cost
        # of screening's writes, while the draw sorts its pool once in a few seconds.
        # State and reason together: a state change rewrites the entry anyway (a reason
        # comes with its state), and the funnel's counts (every stage artifact, every
        # report) read this index alone instead of every row: 0.2 s at a million, not 1.8.
        Index("ix_registrant_wave_state_reason", "wave_id", "state", "reason"),
        # The few registrants a partner failure left pending, by stage and partner.
        Index(
            "ix_registrant_pending",
            "wave_id",
            "pending_stage",
            "pending_partner",
            sqlite_where=text("pending_stage IS NOT NULL"),
            postgresql_where=text("pending_stage IS NOT NULL"),
        ),
        # The waitlist in draw order, for backfill rounds and quota raises: the head of a
        # waitlist of 1.7 million without reading all of it (2.6-4.2 s per round at six
        # million rows). The draw and the close, which move a whole waitlist at once,
        # build it after their UPDATE on SQLite instead of inserting 1.7 million random
        # keys one by one (tasks/draw.py `rebuilt_waitlist_index`).
        Index(
            "ix_registrant_waitlist",
            "wave_id",
            "priority",
            "draw_key",
            sqlite_where=text(WAITLISTED),
            postgresql_where=text(WAITLISTED),
        ),
        Index(
            "ix_registrant_drawn_nik",
            "nik",
            sqlite_where=text("draw_round IS NOT NULL"),
            postgresql_where=text("draw_round IS NOT NULL"),
        ),
        # The drawn, with what a backfill round counts of each seat (state, reason,
        # province, family card): its free seats and family counts read this index
        # alone, not a row per drawn registrant (migration 0005).
        Index(
            "ix_registrant_drawn",
            "wave_id",
            "draw_round",
            "state",
            "reason",
            "province",
            "kk_number",
            sqlite_where=text("draw_round IS NOT NULL"),
            postgresql_where=text("draw_round IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    wave_id: int = Field(foreign_key="wave.wave_id")
    line: int
    registration_id: str | None = None
    nik: str | None = None
    kk_number: str | None = None
    full_name: str | None = None
    birth_date: date | None = None
    gender: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    phone: str | None = None
    domicile_regency_code: str | None = None
    province: str | None = None
    test_score: int | None = None
    payout_provider: str | None = None
    payout_account: str | None = None
    registered_at: datetime | None = Field(default=None, sa_type=DateTime)  # UTC, naive
    raw: str | None = Field(default=None, sa_type=Text)  # rejected rows only, <= 4 KiB

    state: str = State.AWAIT_LOCAL
    reason: str | None = None
    # Evidence of each check, kept for `explain`.
    identity_answer: str | None = Field(default=None, sa_type=Text)
    identity_at: datetime | None = Field(default=None, sa_type=DateTime)
    screening_answers: str | None = Field(default=None, sa_type=Text)  # {agency_id: listed}
    screening_at: datetime | None = Field(default=None, sa_type=DateTime)
    priority: bool = False
    draw_key: str | None = None
    draw_round: int | None = None  # 0 = the draw, k = backfill round k, -1 = a quota raise
    drawn_at: datetime | None = Field(default=None, sa_type=DateTime)
    account_status: str | None = None
    account_at: datetime | None = Field(default=None, sa_type=DateTime)
    card_number: str | None = Field(default=None, unique=True)
    confirmed_at: datetime | None = Field(default=None, sa_type=DateTime)
    credited_at: datetime | None = Field(default=None, sa_type=DateTime)
    decided_at: datetime | None = Field(default=None, sa_type=DateTime)
    # A partner failure that left the registrant waiting at a stage.
    pending_stage: str | None = None
    pending_partner: str | None = None
    pending_error: str | None = None
    pending_at: datetime | None = Field(default=None, sa_type=DateTime)


# A credit that is paid or may be: the issuer applied it, or it may yet, or a person must
# find out (CONFLICT: the issuer may hold it) (wave-rules.md, "Paid once in the program";
# CONFLICT since migration 0008). Written the same way in the index and in the queries that
# must use it (SQLite only uses a partial index whose WHERE appears in the query's).
LIVE_CREDIT = "status IN ('PENDING', 'APPLIED', 'CONFLICT')"


class LedgerEntry(SQLModel, table=True):
    """One credit per (wave, NIK, benefit), written before the issuer is called; at most
    one live (pending, applied or conflict) credit per (NIK, benefit) in the whole program."""

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("wave_id", "nik", "benefit", name="uq_ledger_credit"),
        Index(
            "uq_ledger_live_credit",
            "nik",
            "benefit",
            unique=True,
            sqlite_where=text(LIVE_CREDIT),
            postgresql_where=text(LIVE_CREDIT),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    wave_id: int = Field(index=True)
    nik: str
    benefit: str
    idempotency_key: str = Field(unique=True)
    card_number: str
    amount: int = Field(sa_type=BigInteger)
    status: str = LedgerStatus.PENDING
    transfer_id: str | None = None
    issuer_reason: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(sa_type=DateTime)
    updated_at: datetime = Field(sa_type=DateTime)


class Message(SQLModel, table=True):
    """The SMS outbox: one `balance_credited` message per credited participant."""

    __table_args__ = (Index("ix_message_wave_status", "wave_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    wave_id: int
    nik: str
    idempotency_key: str = Field(unique=True)
    phone: str
    template: str
    params_json: str = Field(sa_type=Text)
    status: str = MessageStatus.QUEUED
    reason: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(sa_type=DateTime)
    sent_at: datetime | None = Field(default=None, sa_type=DateTime)


class BlacklistEntry(SQLModel, table=True):
    """The program's own revocation list: a listed NIK is BLACKLISTED in later checks."""

    __tablename__ = "blacklist"

    nik: str = Field(primary_key=True)
    reason: str
    added_by: str
    added_at: datetime = Field(sa_type=DateTime)


class PortalPerson(SQLModel, table=True):
    """The dashboard's read model: a person's row in each wave, found by NIK.

    One row per (NIK, wave) for every valid NIK of a wave's export, pointing at the row
    that counts for that NIK (the earliest accepted row, else the first). A person's
    whole view is one range scan of this primary key plus primary-key lookups, however
    big the waves. Intake keeps no index over every NIK while it loads; this table is
    filled once per wave after intake, in NIK order (tasks/portal_index.py).
    """

    __tablename__ = "portal_person"

    nik: str = Field(primary_key=True)
    wave_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    registrant_id: int


class PortalSession(SQLModel, table=True):
    """A signed-in registrant: the cookie holds a random token, the database its hash.

    `last_seen` is indexed so that the sweep finds idle sessions without reading the table
    (migration 0007). `created_at` is not: a session 12 hours old is ended by its next
    request, or swept through `last_seen` 30 minutes after its last, and an index paid
    on every sign-in would find nothing those two do not."""

    __tablename__ = "portal_session"
    __table_args__ = (Index("ix_portal_session_last_seen", "last_seen"),)

    token_hash: str = Field(primary_key=True)
    nik: str
    created_at: float
    last_seen: float


class LoginGuard(SQLModel, table=True):
    """Per NIK (keyed hash, never the NIK): the current code and the sign-in limits.

    Kept in the database so that every portal process sees the same counts. Times are
    Unix seconds; `requests`/`failures` hold the last 24 hours' (at most 10 and 20),
    comma-separated. `updated_at` is indexed for the sweep (migration 0007).
    """

    __tablename__ = "login_guard"
    __table_args__ = (Index("ix_login_guard_updated_at", "updated_at"),)

    key: str = Field(primary_key=True)
    requests: str = ""
    failures: str = ""
    locked_until: float = 0
    code_hash: str | None = None
    code_expires: float = 0
    updated_at: float = 0


class PortalSecret(SQLModel, table=True):
    """The dashboard's secret when PRAKERJA_PORTAL_SECRET is unset: made once (row 1) and
    shared by every portal process and restart, so limits and codes outlive them."""

    __tablename__ = "portal_secret"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    secret: str
    created_at: float


class PortalGuessMinute(SQLModel, table=True):
    """Wrong sign-in codes across all NIKs, per minute (Unix seconds // 60): counts only."""

    __tablename__ = "portal_guess_minute"

    minute: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    failures: int


class PortalAlert(SQLModel, table=True):
    """When the dashboard last raised an alert (by event name), so that every process
    together raises it at most once per its quiet period."""

    __tablename__ = "portal_alert"

    name: str = Field(primary_key=True)
    raised_at: float


class SignOff(SQLModel, table=True):
    """One approval of a wave as it stood: who, when, from where, and what they saw. It
    counts while the wave's digest is still `digest` (rules/signoff.py)."""

    __tablename__ = "sign_off"
    __table_args__ = (
        UniqueConstraint("wave_id", "approver_key", "digest", name="uq_sign_off_approver"),
    )

    id: int | None = Field(default=None, primary_key=True)
    wave_id: int = Field(index=True)
    approved_by: str
    approver_key: str  # rules.signoff.same_person_key(approved_by)
    host: str
    via: str  # "cli" or "prefect"
    at: datetime = Field(sa_type=DateTime)
    seats_json: str = Field(sa_type=Text)
    confirmed: int
    total_amount: int = Field(sa_type=BigInteger)
    digest: str
    # Under an approvers file (migration 0008): the approver's Ed25519 signature (base64)
    # over rules.signature.signed_text, and their key's fingerprint; None: unsigned.
    signature: str | None = None
    key_fingerprint: str | None = None


class AuditEntry(SQLModel, table=True):
    """The append-only audit trail of operator actions, hash-chained (rules/audit.py).

    Ids are given by the writer (1, 2, 3, ... without gaps) under a lock, so that a
    missing row shows as a gap and two writers can never fork the chain."""

    __tablename__ = "audit"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = Field(sa_type=DateTime)
    who: str
    host: str
    action: str
    wave_id: int | None = Field(default=None, index=True)
    before_json: str | None = Field(default=None, sa_type=Text)
    after_json: str | None = Field(default=None, sa_type=Text)
    prev_hash: str
    hash: str


# ---------------------------------------------------------------- after the balance
# lifecycle.md. A payment that is paid or may be (rules/lifecycle.py
# LIVE_PAYMENT_STATUSES), written the same way in the index and in the queries.
LIVE_PAYMENT = "status IN ('DUE', 'SENDING', 'PAID', 'CONFLICT')"


class Participant(SQLModel, table=True):
    """One credited registrant's life after the balance (lifecycle.md): its state, reason
    and the date it was reached, its deadline, what the training events said, and its
    revocation. Made by the payout run for every CREDITED registrant."""

    __tablename__ = "participant"
    __table_args__ = (Index("ix_participant_state", "state", "deadline_on"),)

    registrant_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    wave_id: int
    nik: str = Field(index=True)
    card_number: str = Field(unique=True)
    credited_amount: int = Field(sa_type=BigInteger)
    credited_on: date
    deadline_on: date
    state: str
    reason: str | None = None
    state_on: date
    first_purchase_on: date | None = None
    first_completion_on: date | None = None
    balance_left: int = Field(sa_type=BigInteger)
    late_purchase: bool = False
    orphan_completions: int = 0
    card_used_at_issuer: bool = False
    revoke_reason: str | None = None
    revoke_status: str | None = None  # SENDING, REVOKED, CARD_USED, CONFLICT
    amount_returned: int | None = Field(default=None, sa_type=BigInteger)
    revoked_on: date | None = None
    revoke_error: str | None = None
    events_seen: int = 0  # training events of the card when its state was last derived
    updated_at: datetime = Field(sa_type=DateTime)


class TrainingEvent(SQLModel, table=True):
    """Every training platform event the program accepted, once per (platform, event id)."""

    __tablename__ = "training_event"

    platform: str = Field(primary_key=True)
    event_id: str = Field(primary_key=True)
    type: str
    card_number: str = Field(index=True)
    course_id: str
    price: int | None = Field(default=None, sa_type=BigInteger)
    at: datetime = Field(sa_type=DateTime)  # naive UTC
    received_at: datetime = Field(sa_type=DateTime)


class FeedCursor(SQLModel, table=True):
    """Where each platform's feed was read up to, stored with the events it covered."""

    __tablename__ = "feed_cursor"

    platform: str = Field(primary_key=True)
    cursor: str | None = None
    events: int = 0
    duplicates: int = 0
    unreadable: int = 0
    updated_at: datetime = Field(sa_type=DateTime)


class Payment(SQLModel, table=True):
    """One incentive or survey payment: its own ledger row, written before it is sent, with
    the re-check answers it was paid on. At most one live payment per (NIK, benefit,
    installment) in the whole program."""

    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("wave_id", "nik", "benefit", "installment", name="uq_payment"),
        Index(
            "uq_payment_live",
            "nik",
            "benefit",
            "installment",
            unique=True,
            sqlite_where=text(LIVE_PAYMENT),
            postgresql_where=text(LIVE_PAYMENT),
        ),
        Index("ix_payment_status", "status", "due_on"),
        Index("ix_payment_registrant", "registrant_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    wave_id: int
    registrant_id: int
    nik: str
    benefit: str
    installment: int
    amount: int = Field(sa_type=BigInteger)
    due_on: date
    idempotency_key: str = Field(unique=True)
    provider: str | None = None
    account: str | None = None
    status: str
    reason: str | None = None
    checked_on: date | None = None  # the as-of date of the run whose re-check passed
    checks_json: str | None = Field(default=None, sa_type=Text)
    reference: str | None = None  # payout-<as-of> of the run that sent it
    run_as_of: date | None = None  # the run that settled it (paid, failed, stopped)
    transfer_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(sa_type=DateTime)
    updated_at: datetime = Field(sa_type=DateTime)


class SurveyResponse(SQLModel, table=True):
    """A participant's answer to survey k (portal.md): it makes survey payment k due."""

    __tablename__ = "survey_response"

    registrant_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    survey: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    answers_json: str = Field(sa_type=Text)
    answered_at: datetime = Field(sa_type=DateTime)


class PayoutRun(SQLModel, table=True):
    """One payout run per as-of date: a rerun of the same date resumes it."""

    __tablename__ = "payout_run"

    as_of: date = Field(primary_key=True)
    status: str
    sign_off: int = 0
    reruns: int = 0
    digest: str | None = None
    counts_json: str | None = Field(default=None, sa_type=Text)
    started_at: datetime = Field(sa_type=DateTime)
    finished_at: datetime | None = Field(default=None, sa_type=DateTime)


class PayoutLease(SQLModel, table=True):
    """The lease every payout run holds (one row): two payout runs never interleave."""

    __tablename__ = "payout_lease"

    name: str = Field(primary_key=True)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = Field(default=None, sa_type=DateTime)


class PayoutSignOff(SQLModel, table=True):
    """One approval of a payout run's payments as they stood (lifecycle.md, "Payout runs");
    it counts while the run's digest is still `digest`."""

    __tablename__ = "payout_sign_off"
    __table_args__ = (
        UniqueConstraint("as_of", "approver_key", "digest", name="uq_payout_sign_off_approver"),
    )

    id: int | None = Field(default=None, primary_key=True)
    as_of: date = Field(index=True)
    approved_by: str
    approver_key: str
    host: str
    via: str
    at: datetime = Field(sa_type=DateTime)
    payments: int
    total_amount: int = Field(sa_type=BigInteger)
    digest: str
    signature: str | None = None  # as SignOff's (migration 0008)
    key_fingerprint: str | None = None
