"""The sandbox's fault injector: deterministic decisions with a fake clock."""

from __future__ import annotations

import pytest

from sandbox.faults import FaultInjector


def test_rate_limit_window_and_retry_after():
    now = [0.0]
    faults = FaultInjector(clock=lambda: now[0])
    faults.configure("itwin.issues.create", rate_limit_per_minute=2)
    assert faults.decide("itwin.issues.create") is None
    assert faults.decide("itwin.issues.create") is None
    limited = faults.decide("itwin.issues.create")
    assert limited is not None
    assert limited.status == 429
    assert limited.retry_after == 60
    now[0] = 45.0
    assert faults.decide("itwin.issues.create").retry_after == 15  # type: ignore[union-attr]
    now[0] = 61.0
    assert faults.decide("itwin.issues.create") is None


def test_fail_next_is_exact_and_ordered():
    faults = FaultInjector()
    faults.configure(
        "x", fail_next=[{"status": 503, "count": 2}, {"drop": True}, {"status": 404, "code": "AttachmentNotFound"}]
    )
    decisions = [faults.decide("x") for _ in range(5)]
    assert [d.kind if d else None for d in decisions] == ["error", "error", "drop", "error", None]
    assert decisions[3].code == "AttachmentNotFound"  # type: ignore[union-attr]


def test_wildcard_and_error_rate():
    faults = FaultInjector()
    faults.configure("*", error_rate=1.0, error_status=502)
    assert faults.decide("anything").status == 502  # type: ignore[union-attr]
    faults.reset()
    assert faults.decide("anything") is None


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="unknown fault options"):
        FaultInjector().configure("x", explode=True)


def test_raw_reply_entries_keep_status_headers_and_body_exactly():
    faults = FaultInjector()
    hostile = "http://127.0.0.1:9\\@api-host/issues/1/attachments/2"
    faults.configure(
        "x",
        fail_next=[
            {"status": 201, "headers": {"Location": hostile}, "count": 2},
            {"headers": [["Link", "a"], ["Link", "b"]], "body": {"next": "http://other.example"}},
        ],
    )
    first, second, third = (faults.decide("x") for _ in range(3))
    assert first == second
    assert (first.kind, first.status, first.headers, first.body) == ("reply", 201, (("Location", hostile),), b"")  # type: ignore[union-attr]
    assert third.status == 200  # type: ignore[union-attr]
    assert third.headers == (("Link", "a"), ("Link", "b"), ("Content-Type", "application/json"))  # type: ignore[union-attr]
    assert third.body == b'{"next": "http://other.example"}'  # type: ignore[union-attr]
    assert faults.decide("x") is None


def test_echo_authorization_is_carried_by_error_entries():
    faults = FaultInjector()
    faults.configure("x", fail_next=[{"status": 401, "code": "InvalidToken", "echo_authorization": True}])
    fault = faults.decide("x")
    assert fault is not None
    assert (fault.kind, fault.code, fault.echo_authorization) == ("error", "InvalidToken", True)


def test_short_and_mid_body_drop_entries():
    faults = FaultInjector()
    faults.configure(
        "x",
        fail_next=[
            {"short_by": 10},
            {"status": 200, "body": "{}", "short_by": 3},
            {"drop_after_bytes": 4096},
        ],
    )
    short, short_reply, drop = (faults.decide("x") for _ in range(3))
    assert (short.kind, short.short_by) == ("short", 10)  # type: ignore[union-attr]
    assert (short_reply.kind, short_reply.body, short_reply.short_by) == ("reply", b"{}", 3)  # type: ignore[union-attr]
    assert (drop.kind, drop.drop_after_bytes) == ("drop_mid_body", 4096)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"status": 201, "headers": {"Location": "a\r\nb"}}, "one-line"),
        ({"status": 201, "headers": {"Transfer-Encoding": "chunked"}}, "set by the server"),
        ({"status": 600}, "200..599"),
        ({"status": 200, "body": "x", "echo_authorization": True}, "raw reply"),
        ({"status": 500, "details": "not a list"}, "details"),
        ({"sometimes": True}, "unknown fail_next options"),
        ({"short_by": 0}, "short_by"),
        ({"short_by": True}, "short_by"),
        ({"drop_after_bytes": -1}, "drop_after_bytes"),
        ({"drop_after_bytes": 10, "status": 500}, "no other option"),
    ],
)
def test_bad_entries_are_refused_before_anything_changes(entry, complaint):
    faults = FaultInjector()
    with pytest.raises(ValueError, match=complaint):
        faults.configure("x", fail_next=[{"status": 503}, entry])
    assert faults.decide("x") is None
