"""The one retry policy: what is retried, how long it waits, and that it never outlives the invocation."""

from __future__ import annotations

import pytest

from relay import errors as e
from relay.transport.requestor import Requestor
from relay.transport.retry import Deadline, RetryPolicy
from tests.unit.fakes import FakeResponse, FakeSession


def err(status: int | None, retry_after: float | None = None) -> e.RelayError:
    if status is None:
        return e.VendorConnectionError("reset", code="ConnectionError")
    return e.error_class_for(status)("x", http_status=status, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (err(None), True),  # timeouts, refused and reset connections
        (err(429), True),
        (err(500), True),
        (err(502), True),
        (err(503), True),
        (err(504), True),
        (err(400), False),
        (err(401), False),  # handled by the one token re-read, not by backoff
        (err(403), False),
        (err(404), False),
        (err(409), False),
        (err(413), False),
        (err(422), False),
        (e.UnsafeLocationError("host"), False),
        (e.ConfigurationError("secret"), False),
    ],
)
def test_should_retry_table(error, retry):
    assert RetryPolicy.should_retry(error) is retry


def test_backoff_is_exponential_and_capped_with_pinned_jitter():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, jitter=lambda d: d)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_default_jitter_stays_below_the_cap():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    assert all(0 <= policy.backoff(n) <= 8.0 for n in range(1, 20) for _ in range(20))


def test_429_waits_at_least_retry_after():
    policy = RetryPolicy(base_delay=0.5, jitter=lambda d: d)
    assert policy.delay(err(429, retry_after=7), 1) == 7
    assert policy.delay(err(429, retry_after=None), 1) == 0.5


class Tokens:
    def __init__(self):
        self.invalidated = 0
        self.n = 0

    def token(self):
        self.n += 1
        return f"tok-{self.n}"

    def invalidate(self):
        self.invalidated += 1

    def use_deadline(self, deadline):
        self.deadline = deadline


def requestor(script, *, remaining_ms=None, max_attempts=5, tokens=None):
    sleeps: list[float] = []
    r = Requestor(
        "https://api.example.test",
        tokens=tokens or Tokens(),
        token_hosts=(),
        session=FakeSession(script),  # type: ignore[arg-type]
        policy=RetryPolicy(max_attempts=max_attempts, jitter=lambda d: d, deadline_margin=5.0),
        sleep=sleeps.append,
    )
    if remaining_ms is not None:
        r.use_deadline(Deadline(lambda: remaining_ms))
    return r, sleeps


def test_retries_then_succeeds_with_backoff():
    r, sleeps = requestor([FakeResponse(503), FakeResponse(429, headers={"retry-after": "2"}), FakeResponse(200)])
    assert r.request("GET", "/x").status == 200
    assert sleeps == [0.5, 2.0]


def test_gives_up_after_max_attempts_and_says_so():
    r, sleeps = requestor([FakeResponse(503)] * 3, max_attempts=3)
    with pytest.raises(e.ServerError) as info:
        r.request("GET", "/x")
    assert len(sleeps) == 2
    assert "gave up: 3 attempts" in str(info.value)


def test_never_sleeps_past_the_invocation():
    r, sleeps = requestor([FakeResponse(429, headers={"retry-after": "30"})], remaining_ms=20_000)
    with pytest.raises(e.RateLimitedError) as info:
        r.request("GET", "/x")
    assert sleeps == []
    assert "would outlive the invocation" in str(info.value)


def test_401_rereads_the_token_once_then_fails():
    tokens = Tokens()
    r, _ = requestor([FakeResponse(401), FakeResponse(401)], tokens=tokens)
    with pytest.raises(e.AuthenticationError):
        r.request("GET", "/x")
    assert tokens.invalidated == 1
    sent = r.session.sent  # type: ignore[attr-defined]
    assert [s[2]["headers"]["Authorization"] for s in sent] == ["Bearer tok-1", "Bearer tok-2"]


def test_4xx_is_not_retried():
    r, sleeps = requestor([FakeResponse(404, b'{"error":{"code":"IssueNotFound","message":"no"}}')])
    with pytest.raises(e.NotFoundError):
        r.request("GET", "/x")
    assert sleeps == []


def test_token_never_goes_to_another_host():
    r, _ = requestor([])
    with pytest.raises(e.UnsafeLocationError) as info:
        r.request("PUT", "https://evil.example.net/upload?sig=1")
    assert "evil.example.net" in str(info.value)
    assert "tok-" not in str(info.value)
    assert r.session.sent == []  # type: ignore[attr-defined]


def test_connection_errors_are_wrapped_and_retried():
    import requests

    r, sleeps = requestor([requests.ConnectionError("reset by peer"), requests.Timeout("slow"), FakeResponse(201)])
    assert r.request("POST", "/x").status == 201
    assert len(sleeps) == 2


def test_create_is_not_repeated_after_an_ambiguous_failure():
    import requests

    r, sleeps = requestor([requests.ReadTimeout("lost answer"), FakeResponse(201)])
    with pytest.raises(e.VendorConnectionError) as info:
        r.request("POST", "/x", idempotent=False)
    assert info.value.ambiguous
    assert sleeps == []


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_create_answered_with_a_5xx_that_may_follow_the_work_is_not_repeated(status):
    r, sleeps = requestor([FakeResponse(status), FakeResponse(201)])
    with pytest.raises(e.ServerError) as info:
        r.request("POST", "/x", idempotent=False)
    assert info.value.ambiguous
    assert sleeps == []


def test_a_create_answered_503_is_retried_the_server_did_not_take_it():
    r, sleeps = requestor([FakeResponse(503), FakeResponse(201)])
    assert r.request("POST", "/x", idempotent=False).status == 201
    assert len(sleeps) == 1


def test_a_read_answered_500_is_retried():
    r, sleeps = requestor([FakeResponse(500), FakeResponse(200)])
    assert r.request("GET", "/x").status == 200
    assert len(sleeps) == 1


def test_create_is_retried_when_it_never_left():
    import requests

    r, sleeps = requestor([requests.ConnectTimeout("no route"), FakeResponse(201)])
    assert r.request("POST", "/x", idempotent=False).status == 201
    assert len(sleeps) == 1


def test_a_long_retry_after_goes_back_to_the_queue_instead_of_waiting():
    r, sleeps = requestor([FakeResponse(429, headers={"retry-after": "3600"})])
    with pytest.raises(e.RateLimitedError) as info:
        r.request("GET", "/x")
    assert sleeps == []
    assert "over the 60s cap" in str(info.value)


@pytest.mark.parametrize("status", [301, 302, 307, 308, 200])
def test_a_create_accepts_only_201(status):
    r, _ = requestor([FakeResponse(status, headers={"Location": "https://evil.example/x"})])
    with pytest.raises(e.UnexpectedStatusError) as info:
        r.request("POST", "/x", expect=(201,), idempotent=False)
    assert info.value.http_status == status
    assert len(r.session.sent) == 1  # type: ignore[attr-defined]
    assert r.session.sent[0][2]["allow_redirects"] is False  # type: ignore[attr-defined]


def test_a_request_requests_refuses_never_quotes_the_token():
    import requests

    class BadToken(Tokens):
        def token(self):
            return "tok-SECRET\n"

    r, _ = requestor([requests.exceptions.InvalidHeader("Invalid header value b'Bearer tok-SECRET\\n'")])
    r.tokens = BadToken()
    with pytest.raises(e.VendorError) as info:
        r.request("GET", "/x")
    assert info.value.code == "RequestError"
    assert "tok-SECRET" not in str(info.value)
    assert info.value.__cause__ is None


def test_the_token_source_gets_the_invocation_deadline():
    tokens = Tokens()
    r, _ = requestor([], tokens=tokens)
    deadline = Deadline(lambda: 3000)
    r.use_deadline(deadline)
    assert tokens.deadline is deadline
