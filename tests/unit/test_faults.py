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
