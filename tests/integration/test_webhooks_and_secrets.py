"""No token or client secret leaks into logs, records or tags."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def test_tokens_and_client_secret_never_reach_logs_records_or_tags(harness: Harness, logs):
    issue = harness.new_parent()
    harness.put(f"issues/{issue}/ok.jpg", b"fine")
    harness.put(f"issues/{issue}/denied.jpg", b"denied")
    harness.deliver()
    harness.admin("POST", "tokens/revoke", {})
    harness.put(f"issues/{issue}/after-revoke.jpg", b"again")
    harness.fault("itwin.issues.create", fail_next=[{"status": 401, "code": "InvalidToken", "count": 2}])
    harness.deliver()
    stored = json.loads(
        harness.stack.client("secretsmanager").get_secret_value(SecretId=harness.stack.resources["ItwinSecret"])[
            "SecretString"
        ]
    )
    # Every token the sandbox mints starts "sbx-itwin-"; none may appear, whichever one was in use.
    secrets_seen = {"sbx-itwin-", stored["client_secret"], stored["client_id"] + ":"}
    text = logs.getvalue()
    records = json.dumps(harness.records())
    tags = json.dumps([harness.tags(f"issues/{issue}/{n}") for n in ("ok.jpg", "denied.jpg", "after-revoke.jpg")])
    assert "transfer finished" in text
    for secret in secrets_seen:
        assert secret not in text
        assert secret not in records
        assert secret not in tags
