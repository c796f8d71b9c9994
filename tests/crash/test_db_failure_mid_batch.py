"""A database failure in the middle of a batch leaves no half-written batch.

A SQLite trigger RAISE(ABORT)s on one registrant of a batch (its CREDITED update, its SMS
insert, its ledger insert, or its SMS being marked sent): the batch fails, and nothing of
the failed transaction is there for anyone of the batch. With the trigger gone, the same
batch again credits everyone exactly once (asking the issuer about the credits it had
already applied instead of sending them again) and queues one SMS each.
"""

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from tests.tasks.factories import make_wave, nik_for

SEED = "crash-db-seed"
N = 10
VICTIM = 5  # the sixth registrant of the batch


@pytest.fixture
def sqlite_only(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("the failure is injected with a SQLite trigger")


@pytest.fixture
def simulator():
    from partners.simulator.server import SimulatorThread

    with SimulatorThread(SEED) as sim:
        yield sim


def _client(cls, partner_id: str, url: str):
    from partners.config import PartnerSettings, RetrySettings

    return cls(
        PartnerSettings(
            id=partner_id,
            base_url=url,
            api_key="k",
            retry=RetrySettings(attempts=3, total_s=5, backoff_s=0.01, backoff_max_s=0.05),
        )
    )


@pytest.fixture
def batch(sqlite_only, sessions, simulator):
    """A wave with N confirmed participants (none the issuer or the gateway refuses)."""
    from models.tables import Registrant
    from partners.simulator.truth import person_truth
    from rules.money import card_number_for

    make_wave(sessions, 1, quota=N)
    niks, i = [], 0
    while len(niks) < N:
        i += 1
        nik = nik_for(i)
        t = person_truth(SEED, nik)
        if not (t.credit_rejected or t.sms_rejected):
            niks.append(nik)
    rows = [
        {
            "wave_id": 1,
            "line": n + 2,
            "nik": nik,
            "phone": f"+62812{n:08d}",
            "card_number": card_number_for(n + 1),
            "state": "CONFIRMED",
            "priority": False,
        }
        for n, nik in enumerate(niks)
    ]
    with sessions() as session, session.begin():
        session.connection().execute(insert(Registrant.__table__), rows)
    with sessions() as session:
        ids = [r for (r,) in session.connection().exec_driver_sql("SELECT id FROM registrant")]
    return niks, (min(ids), max(ids))


def _sql(sessions, statement: str) -> None:
    with sessions() as session, session.begin():
        session.connection().exec_driver_sql(statement)


def _rows(sessions, statement: str) -> list[tuple]:
    with sessions() as session:
        return list(session.connection().exec_driver_sql(statement))


TRIGGERS = {
    "registrant CREDITED": "BEFORE UPDATE OF state ON registrant "
    "WHEN NEW.state = 'CREDITED' AND NEW.nik = '{nik}'",
    "SMS queued": "BEFORE INSERT ON message WHEN NEW.nik = '{nik}'",
    "ledger row": "BEFORE INSERT ON ledger WHEN NEW.nik = '{nik}'",
}


@pytest.mark.parametrize("where", list(TRIGGERS))
def test_a_database_failure_mid_rollout_batch_leaves_nothing_half_written(
    batch, sessions, simulator, where
):
    from partners.issuer import IssuerClient
    from tasks.rollout import credit_training_balance_batch

    niks, id_range = batch
    issuer = _client(IssuerClient, "card-issuer", f"{simulator.base_url}/issuer")
    sim = simulator.simulator
    _sql(
        sessions,
        f"CREATE TRIGGER crash_test {TRIGGERS[where].format(nik=niks[VICTIM])} "
        "BEGIN SELECT RAISE(ABORT, 'injected database failure'); END",
    )
    with pytest.raises(DBAPIError, match="injected database failure"):
        credit_training_balance_batch(sessions, issuer, 1, id_range)

    # Nothing of the failed transaction, for anyone of the batch.
    assert _rows(sessions, "SELECT DISTINCT state FROM registrant") == [("CONFIRMED",)]
    assert _rows(sessions, "SELECT count(*) FROM message") == [(0,)]
    ledger = _rows(sessions, "SELECT status, attempts, transfer_id FROM ledger")
    if where == "ledger row":
        # The ledger rows are written before the issuer is called: no row, no call.
        assert ledger == []
        assert sim.calls.get("card-issuer", 0) == 0
    else:
        # The issuer applied them; the ledger still says PENDING, with the attempt counted.
        assert sorted(set(ledger)) == [("PENDING", 1, None)] and len(ledger) == N
        assert sim.issuer.applied == N

    _sql(sessions, "DROP TRIGGER crash_test")
    report = credit_training_balance_batch(sessions, issuer, 1, id_range)
    assert report["counts"].get("credited") == N

    assert _rows(sessions, "SELECT DISTINCT state FROM registrant") == [("CREDITED",)]
    assert _rows(sessions, "SELECT status, count(*) FROM ledger GROUP BY status") == [
        ("APPLIED", N)
    ]
    messages = _rows(sessions, "SELECT nik, status FROM message ORDER BY nik")
    assert messages == [(nik, "QUEUED") for nik in sorted(niks)]
    # Exactly once at the issuer; the rerun asked about the applied credits, never re-sent.
    assert sim.issuer.applied == N
    assert sim.items["card-issuer"] == N
    statement, _ = sim.issuer.statement("wave-1/training", 0, 1000)
    assert sorted(e["transfer_id"] for e in statement) == sorted(
        t for (t,) in _rows(sessions, "SELECT transfer_id FROM ledger")
    )


def test_a_database_failure_mid_message_batch_leaves_nothing_half_written(
    batch, sessions, simulator
):
    from partners.issuer import IssuerClient
    from partners.notifier import NotifierClient
    from tasks.announce import plan_message_batches, send_messages_batch
    from tasks.rollout import credit_training_balance_batch

    niks, id_range = batch
    issuer = _client(IssuerClient, "card-issuer", f"{simulator.base_url}/issuer")
    notifier = _client(NotifierClient, "notifier", f"{simulator.base_url}/notify")
    sim = simulator.simulator
    credit_training_balance_batch(sessions, issuer, 1, id_range)
    [message_range] = plan_message_batches(sessions, 1, 1000)
    _sql(
        sessions,
        "CREATE TRIGGER crash_test BEFORE UPDATE OF status ON message "
        f"WHEN NEW.status = 'ACCEPTED' AND NEW.nik = '{niks[VICTIM]}' "
        "BEGIN SELECT RAISE(ABORT, 'injected database failure'); END",
    )
    with pytest.raises(DBAPIError, match="injected database failure"):
        send_messages_batch(sessions, notifier, 1, message_range)
    # The gateway took them; the outbox still has every one queued, none half-marked.
    assert sim.notifier.accepted == N
    assert _rows(sessions, "SELECT DISTINCT status, attempts, sent_at FROM message") == [
        ("QUEUED", 0, None)
    ]

    _sql(sessions, "DROP TRIGGER crash_test")
    send_messages_batch(sessions, notifier, 1, message_range)
    assert _rows(sessions, "SELECT nik, status FROM message ORDER BY nik") == [
        (nik, "ACCEPTED") for nik in sorted(niks)
    ]
    # Sent again under the same keys: the gateway accepted each key once.
    assert sim.notifier.accepted == N
    assert sim.notifier.duplicate_keys == N
