"""The common rules of partner-api.md, checked on the shared client against a mocked partner."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from partners.client import PartnerClient, PartnerFailure
from partners.config import RetrySettings
from partners.limits import CircuitBreaker
from tests.partners import API_KEY, BASE, FakeClock, settings

PATH = "/v1/screening/check"
URL = BASE + PATH
NIKS = {f"r{i}": f"31710141019000{i:02d}" for i in range(10)}


def parse_listed(result: dict) -> bool | None:
    listed = result.get("listed")
    return listed if isinstance(listed, bool) else None


def client_for(clock: FakeClock, **changes: object) -> PartnerClient:
    return PartnerClient(settings(**changes), sleep=clock.sleep, clock=clock)


def records(*refs: str) -> list[dict]:
    return [{"ref": ref, "nik": NIKS[ref]} for ref in refs]


def check(client: PartnerClient, items: list[dict]) -> dict:
    return client.post_items(PATH, "records", items, key_field="ref", parse=parse_listed)


def answer(*refs: str, listed: bool = False) -> dict:
    return {"json": {"results": [{"ref": ref, "listed": listed} for ref in refs]}}


def sent_refs(request) -> list[str]:
    return [r["ref"] for r in request.json()["records"]]


def test_two_503s_then_an_answer_takes_three_calls_and_two_bounded_waits(requests_mock):
    clock = FakeClock()
    route = requests_mock.post(
        URL, [{"status_code": 503}, {"status_code": 503}, answer("r1", "r2", listed=True)]
    )

    result = check(client_for(clock), records("r1", "r2"))

    assert result == {"r1": True, "r2": True}
    assert route.call_count == 3
    assert len(clock.sleeps) == 2
    # Full jitter: the n-th wait is drawn from [0, backoff_s * 2**n].
    assert 0 <= clock.sleeps[0] <= 0.5
    assert 0 <= clock.sleeps[1] <= 1.0


def test_backoff_never_exceeds_its_cap(requests_mock, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    requests_mock.post(URL, status_code=502)
    retry = RetrySettings(attempts=6, total_s=600.0, backoff_s=1.0, backoff_max_s=2.0)

    result = check(client_for(clock, retry=retry), records("r1"))

    assert clock.sleeps == [1.0, 2.0, 2.0, 2.0, 2.0]
    assert result["r1"].error_class == "HTTPStatus502"


def test_429_waits_at_least_the_seconds_of_retry_after(requests_mock):
    clock = FakeClock()
    route = requests_mock.post(
        URL, [{"status_code": 429, "headers": {"Retry-After": "2"}}, answer("r1")]
    )

    assert check(client_for(clock), records("r1")) == {"r1": False}
    assert route.call_count == 2
    assert clock.sleeps == [2.0]


def test_429_honours_retry_after_given_as_an_http_date(requests_mock):
    clock = FakeClock()
    when = formatdate(time.time() + 5, usegmt=True)
    requests_mock.post(URL, [{"status_code": 429, "headers": {"Retry-After": when}}, answer("r1")])

    assert check(client_for(clock), records("r1")) == {"r1": False}
    # The date has whole seconds, so up to one second of the five is lost to rounding.
    assert len(clock.sleeps) == 1 and 3.5 <= clock.sleeps[0] <= 5.0


def test_retry_after_beyond_the_time_budget_gives_up_without_waiting(requests_mock):
    clock = FakeClock()
    route = requests_mock.post(URL, status_code=429, headers={"Retry-After": "120"})

    result = check(client_for(clock), records("r1"))

    assert route.call_count == 1
    assert clock.sleeps == []
    assert result["r1"] == PartnerFailure("registry", "RateLimited", "HTTP 429 after 1 attempt")


def test_read_timeout_then_answer_is_retried_with_the_configured_timeouts(requests_mock):
    clock = FakeClock()
    route = requests_mock.post(URL, [{"exc": requests.exceptions.ReadTimeout}, answer("r1")])

    assert check(client_for(clock), records("r1")) == {"r1": False}
    assert route.call_count == 2
    assert route.last_request.timeout == (3.0, 10.0)


def test_connection_errors_that_never_end_leave_every_item_failed_after_bounded_attempts(
    requests_mock,
):
    clock = FakeClock()
    route = requests_mock.post(URL, exc=requests.exceptions.ConnectionError)

    result = check(client_for(clock), records("r1", "r2", "r3"))

    assert route.call_count == 6
    assert len(clock.sleeps) == 5
    assert set(result) == {"r1", "r2", "r3"}
    for failure in result.values():
        assert failure == PartnerFailure(
            "registry", "ConnectionError", "ConnectionError after 6 attempts", False
        )


def test_total_time_budget_stops_retries_before_the_attempts_run_out(requests_mock):
    clock = FakeClock()
    retry = RetrySettings(attempts=100, total_s=10.0, backoff_s=4.0, backoff_max_s=4.0)
    route = requests_mock.post(URL, status_code=504)

    result = check(client_for(clock, retry=retry), records("r1"))

    assert route.call_count < 100
    assert sum(clock.sleeps) <= 10.0
    assert result["r1"].error_class == "HTTPStatus504"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_not_retried_and_need_a_person(requests_mock, status):
    clock = FakeClock()
    route = requests_mock.post(URL, status_code=status)

    result = check(client_for(clock), records("r1", "r2"))

    assert route.call_count == 1
    assert clock.sleeps == []
    for failure in result.values():
        assert failure == PartnerFailure(
            "registry", f"HTTPStatus{status}", f"HTTP {status} credentials refused", True
        )


def test_a_request_the_partner_calls_invalid_is_sent_once_and_needs_a_person(requests_mock):
    route = requests_mock.post(URL, status_code=400)

    result = check(client_for(FakeClock()), records("r1"))

    assert route.call_count == 1
    assert result["r1"].error_class == "HTTPStatus400" and result["r1"].needs_person


def test_413_splits_the_batch_in_halves_until_the_partner_accepts(requests_mock):
    def too_large_above_two(request, context):
        refs = sent_refs(request)
        if len(refs) > 2:
            context.status_code = 413
            return {}
        return {"results": [{"ref": ref, "listed": True} for ref in refs]}

    route = requests_mock.post(URL, json=too_large_above_two)
    refs = ["r1", "r2", "r3", "r4", "r5"]

    result = check(client_for(FakeClock(), batch_size=5), records(*refs))

    assert result == {ref: True for ref in refs}
    sizes = [len(sent_refs(r)) for r in route.request_history]
    # Refused at 5 and 3; accepted at 2, after which the last two batches go side by side.
    assert sizes[:3] == [5, 3, 2] and sorted(sizes[3:]) == [1, 2]


def test_413_for_a_single_item_fails_that_item_for_a_person(requests_mock):
    requests_mock.post(URL, status_code=413)

    result = check(client_for(FakeClock()), records("r1", "r2"))

    assert {f.error_class for f in result.values()} == {"HTTPStatus413"}
    assert all(f.needs_person for f in result.values())


def test_items_are_sent_in_batches_of_batch_size(requests_mock):
    def echo(request, context):
        return {"results": [{"ref": ref, "listed": False} for ref in sent_refs(request)]}

    route = requests_mock.post(URL, json=echo)
    items = [{"ref": f"r{i}", "nik": "3171014101900001"} for i in range(2500)]

    result = check(client_for(FakeClock(), batch_size=1000), items)

    assert len(result) == 2500 and not any(isinstance(v, PartnerFailure) for v in result.values())
    # The batches go side by side, so in no particular order.
    assert sorted(len(sent_refs(r)) for r in route.request_history) == [500, 1000, 1000]


def test_no_items_make_no_call(requests_mock):
    route = requests_mock.post(URL, json={"results": []})

    assert check(client_for(FakeClock()), []) == {}
    assert route.call_count == 0


def test_an_item_missing_from_the_answer_is_sent_again_alone(requests_mock):
    route = requests_mock.post(URL, [answer("r1", "r3"), answer("r2", listed=True)])

    result = check(client_for(FakeClock()), records("r1", "r2", "r3"))

    assert result == {"r1": False, "r2": True, "r3": False}
    assert [sent_refs(r) for r in route.request_history] == [["r1", "r2", "r3"], ["r2"]]


def test_an_item_never_answered_fails_with_missing_result(requests_mock):
    requests_mock.post(URL, json={"results": [{"ref": "r1", "listed": False}]})

    result = check(client_for(FakeClock()), records("r1", "r2"))

    assert result["r1"] is False
    assert result["r2"] == PartnerFailure(
        "registry", "MissingResult", "no result for item after 6 attempts"
    )


def test_duplicate_results_that_agree_are_accepted(requests_mock):
    route = requests_mock.post(URL, json={"results": [{"ref": "r1", "listed": True}] * 2})

    assert check(client_for(FakeClock()), records("r1")) == {"r1": True}
    assert route.call_count == 1


def test_duplicate_results_that_disagree_are_asked_again(requests_mock):
    disagreeing = {
        "json": {"results": [{"ref": "r1", "listed": True}, {"ref": "r1", "listed": False}]}
    }
    route = requests_mock.post(URL, [disagreeing, answer("r1", listed=True)])

    assert check(client_for(FakeClock()), records("r1")) == {"r1": True}
    assert route.call_count == 2


def test_results_for_unknown_keys_are_ignored_and_only_counted_in_the_log(requests_mock, caplog):
    body = {"results": [{"ref": "r1", "listed": False}, {"ref": "stranger-99", "listed": True}]}
    route = requests_mock.post(URL, json=body)

    with caplog.at_level(logging.INFO, logger="prakerja.partners"):
        result = check(client_for(FakeClock()), records("r1"))

    assert result == {"r1": False}
    assert route.call_count == 1
    assert "ignored 1 results" in caplog.text
    assert "stranger-99" not in caplog.text


def test_an_unreadable_result_is_retried_then_failed(requests_mock):
    route = requests_mock.post(URL, json={"results": [{"ref": "r1", "listed": "maybe"}]})

    result = check(client_for(FakeClock(), retry=RetrySettings(attempts=3)), records("r1"))

    assert route.call_count == 3
    assert result["r1"].error_class == "UnreadableResult"


def test_truncated_json_is_retried(requests_mock):
    route = requests_mock.post(URL, [{"text": '{"results": [{"ref": "r1", "lis'}, answer("r1")])

    assert check(client_for(FakeClock()), records("r1")) == {"r1": False}
    assert route.call_count == 2


def test_every_attempt_has_a_fresh_request_id_and_the_credentials(requests_mock):
    route = requests_mock.post(URL, [{"status_code": 500}, {"status_code": 500}, answer("r1")])

    check(client_for(FakeClock()), records("r1"))

    ids = [r.headers["X-Request-Id"] for r in route.request_history]
    assert len(set(ids)) == 3
    for request in route.request_history:
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert request.headers["Content-Type"] == "application/json"


def test_breaker_opens_after_threshold_failed_calls_and_closes_when_partner_answers(
    requests_mock,
):
    clock = FakeClock()
    client = client_for(
        clock,
        retry=RetrySettings(attempts=2),
        breaker_threshold=3,
        breaker_cooldown_s=30.0,
    )
    route = requests_mock.post(URL, status_code=503)
    for _ in range(3):
        assert check(client, records("r1"))["r1"].error_class == "HTTPStatus503"
    assert route.call_count == 6

    refused = check(client, records("r1", "r2"))

    assert route.call_count == 6
    assert refused == {
        ref: PartnerFailure("registry", "CircuitOpen", "circuit open") for ref in ("r1", "r2")
    }

    clock.now += 29.0
    assert check(client, records("r1"))["r1"].error_class == "CircuitOpen"
    assert route.call_count == 6

    clock.now += 1.5
    requests_mock.post(URL, json=answer("r1")["json"])
    assert check(client, records("r1")) == {"r1": False}
    assert client.breaker.state == CircuitBreaker.CLOSED
    assert check(client, records("r1")) == {"r1": False}


def test_neither_the_key_nor_personal_data_reach_failures_or_logs(requests_mock, caplog):
    requests_mock.post(URL, [{"status_code": 503}, {"status_code": 401}])

    with caplog.at_level(logging.DEBUG, logger="prakerja.partners"):
        result = check(client_for(FakeClock()), records("r1"))

    text = caplog.text + json.dumps([vars(f) for f in result.values()])
    assert "HTTPStatus401" in text
    assert API_KEY not in text
    assert NIKS["r1"] not in text


def test_get_json_returns_404_without_retrying(requests_mock):
    route = requests_mock.get(BASE + "/v1/things/x", status_code=404)

    assert client_for(FakeClock()).get_json("/v1/things/x") == (404, None)
    assert route.call_count == 1


def test_get_json_retries_transient_failures(requests_mock):
    clock = FakeClock()
    route = requests_mock.get(BASE + "/v1/things/x", [{"status_code": 502}, {"json": {"a": 1}}])

    assert client_for(clock).get_json("/v1/things/x") == (200, {"a": 1})
    assert route.call_count == 2 and len(clock.sleeps) == 1


class SlowPartner:
    """A real server answering every POST after 50 ms; counts the calls in flight at once.

    Real, because requests_mock serializes calls, which would hide any overlap.
    """

    def __init__(self) -> None:
        self.in_flight, self.peak, self.calls = 0, 0, 0
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with lock:
                    owner.calls += 1
                    owner.in_flight += 1
                    owner.peak = max(owner.peak, owner.in_flight)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(0.05)  # real time on purpose: the calls must overlap to count
                with lock:
                    owner.in_flight -= 1
                answer = json.dumps(
                    {"results": [{"ref": r["ref"], "listed": False} for r in body["records"]]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_concurrent_callers_share_the_limit_of_max_concurrency():
    partner = SlowPartner()
    sessions: list[requests.Session] = []

    def new_session() -> requests.Session:
        sessions.append(requests.Session())
        return sessions[-1]

    client = PartnerClient(
        settings(base_url=partner.base_url, max_concurrency=2), session_factory=new_session
    )
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda ref: check(client, records(ref)), ["r1", "r2"] * 3))
    finally:
        client.close()
        partner.close()

    assert answers == [{"r1": False}, {"r2": False}] * 3
    assert partner.peak == 2
    assert len(sessions) == 2  # one per request in flight at once, never one per call or thread


def test_threads_that_come_and_go_reuse_one_session_and_its_connection():
    # Screening starts new threads for every batch: a session per thread would open a
    # connection (and keep a session) per thread, thousands per worker at seed scale.
    partner = SlowPartner()
    sessions: list[requests.Session] = []

    def new_session() -> requests.Session:
        sessions.append(requests.Session())
        return sessions[-1]

    client = PartnerClient(settings(base_url=partner.base_url), session_factory=new_session)
    try:
        for ref in ("r1", "r2", "r3", "r4"):
            with ThreadPoolExecutor(max_workers=1) as pool:  # a new thread each time
                assert pool.submit(check, client, records(ref)).result() == {ref: False}
    finally:
        client.close()
        partner.close()

    assert len(sessions) == 1


def test_a_session_idle_too_long_is_closed_not_reused(monkeypatch):
    # A server closes an idle kept-alive connection after a few seconds; a request sent
    # on it just then fails. Past IDLE_REUSE_S the session is replaced and closed.
    import partners.client as client_module

    monkeypatch.setattr(client_module, "IDLE_REUSE_S", 0.0)
    partner = SlowPartner()
    sessions: list[requests.Session] = []
    closed: list[requests.Session] = []

    class Tracked(requests.Session):
        def close(self) -> None:
            closed.append(self)
            super().close()

    def new_session() -> requests.Session:
        sessions.append(Tracked())
        return sessions[-1]

    client = PartnerClient(settings(base_url=partner.base_url), session_factory=new_session)
    try:
        for ref in ("r1", "r2", "r3"):
            assert check(client, records(ref)) == {ref: False}
        assert len(sessions) == 3 and closed == sessions[:2]
    finally:
        client.close()
        partner.close()
    assert closed == sessions


def test_batches_of_one_call_go_side_by_side_within_max_concurrency():
    partner = SlowPartner()
    items = [{"ref": f"r{i}", "nik": "3171014101900001"} for i in range(1000)]
    client = PartnerClient(
        settings(base_url=partner.base_url, batch_size=100, max_concurrency=3, max_rps=1000)
    )
    try:
        result = check(client, items)
    finally:
        client.close()
        partner.close()

    assert result == {f"r{i}": False for i in range(1000)}
    assert partner.calls == 10 and partner.peak == 3  # never more than max_concurrency
