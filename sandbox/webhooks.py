"""Signed Bentley iTwin webhook (v2) deliveries: `Signature: sha256=<hex>` over the raw body."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import requests


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_event(event_type: str, content: dict[str, Any], itwin_id: str = "sandbox-itwin") -> dict[str, Any]:
    return {
        "content": content,
        "eventType": event_type,
        "enqueuedDateTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "iTwinId": itwin_id,
        "messageId": str(uuid.uuid4()),
        "webhookId": "sandbox-webhook",
    }


def send_webhook(url: str, secret: str, event_type: str, content: dict[str, Any]) -> tuple[int, str]:
    """POST one signed event the way iTwin does, with its ~5 s delivery timeout."""
    raw = json.dumps(webhook_event(event_type, content)).encode()
    headers = {"Content-Type": "application/json", "Signature": signature(secret, raw)}
    response = requests.post(url, data=raw, headers=headers, timeout=5)
    return response.status_code, response.text[:2000]
