"""The sandbox's signed iTwin webhook sender (moved from the integration tier: it checks the sandbox alone)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from sandbox.webhooks import signature
from tests.sandbox.conftest import Client

SECRET = "a-webhook-secret-of-at-least-32-characters"


def test_signature_is_hmac_sha256_hex_of_the_raw_body():
    # RFC 4231 test case 2: a published HMAC-SHA256 answer, independent of this code.
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert signature("Jefe", b"what do ya want for nothing?") == f"sha256={expected}"


def test_sandbox_sends_signed_webhook_events(sb: Client):
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
        answer = sb.admin(
            "POST",
            "webhooks/send",
            {
                "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                "secret": SECRET,
                "eventType": "issues.attachmentAttached.v1",
                "content": content,
            },
        ).json()
    finally:
        server.shutdown()
        server.server_close()
    assert answer["status"] == 202
    ((headers, raw),) = received
    expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["Signature"], expected)
    event = json.loads(raw)
    assert set(event) == {"content", "eventType", "enqueuedDateTime", "iTwinId", "messageId", "webhookId"}
    assert event["content"] == content
    assert event["eventType"] == "issues.attachmentAttached.v1"


def test_unreachable_webhook_target_is_a_502_not_a_dropped_admin_call(sb: Client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
        port = sock.getsockname()[1]
        response = sb.admin(
            "POST",
            "webhooks/send",
            {"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET, "eventType": "x", "content": {}},
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "WebhookDeliveryFailed"
