"""The sandbox's signed webhook sender, and that no token or client secret leaks into logs or records."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration
SECRET = "a-webhook-secret-of-at-least-32-characters"


def test_sandbox_sends_signed_webhook_events(harness: Harness):
    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), raw))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        content = {"attachmentId": "att-1", "issueId": "ISSUE-1001"}
        answer = harness.admin(
            "POST",
            "webhooks/send",
            {
                "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                "secret": SECRET,
                "eventType": "issues.attachmentAttached.v1",
                "content": content,
            },
        )
    finally:
        server.shutdown()
    assert answer["status"] == 202
    ((headers, raw),) = received
    expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["Signature"], expected)
    event = json.loads(raw)
    assert set(event) == {"content", "eventType", "enqueuedDateTime", "iTwinId", "messageId", "webhookId"}
    assert event["content"] == content
    assert event["eventType"] == "issues.attachmentAttached.v1"


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
