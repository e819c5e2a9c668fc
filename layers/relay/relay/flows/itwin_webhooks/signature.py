"""iTwin webhook (v2) signatures: `Signature: sha256=<hex>`, HMAC-SHA256 of the raw body, checked strictly.

What is accepted, and nothing else:
- exactly one `Signature` header (any case of the name; two, even equal, are refused);
- its value exactly `sha256=` (lower case) followed by 64 lower-case hex digits, with no whitespace anywhere;
- a digest equal (`hmac.compare_digest`) to HMAC-SHA256 of the raw body keyed with the `current` or the
  `previous` secret.
Every refusal is the same `False`: the caller answers one identical 401 and never says which part failed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.errors import ConfigurationError

HEADER = "signature"
PREFIX = "sha256="
MIN_SECRET_CHARS = 32  # iTwin's documented minimum for a webhook secret
_VALUE = re.compile(r"sha256=[0-9a-f]{64}")


@dataclass(frozen=True)
class WebhookSecrets:
    """The webhook secret and, while a rotation is under way, the one before it. Never in repr or errors."""

    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: object, *, secret_id: str) -> WebhookSecrets:
        """`{"current": ..., "previous"?: ...}`; each at least 32 characters, else a ConfigurationError (no values)."""
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"secret {secret_id!r} must be a JSON object with a 'current' field")

        def value(name: str, required: bool) -> str | None:
            text = raw.get(name)
            if text in (None, "") and not required:
                return None
            if not isinstance(text, str) or len(text) < MIN_SECRET_CHARS:
                raise ConfigurationError(
                    f"secret {secret_id!r}: field {name!r} must be a string of at least {MIN_SECRET_CHARS} characters"
                )
            return text

        return cls(current=value("current", True) or "", previous=value("previous", False))

    def hmac_keys(self) -> tuple[bytes, ...]:
        return tuple(s.encode("utf-8") for s in (self.current, self.previous) if s)


def signature_values(headers: Mapping[str, Any] | None, multi: Mapping[str, Any] | None) -> list[str]:
    """Every `Signature` value the request carried, whatever the case of the name (multiValueHeaders first)."""
    if multi:
        found = [v for name, values in multi.items() if name.lower() == HEADER for v in (values or [])]
        if found:
            return [v if isinstance(v, str) else "" for v in found]
    return [v if isinstance(v, str) else "" for name, v in (headers or {}).items() if name.lower() == HEADER]


def parse_signature(values: Sequence[str]) -> bytes | None:
    """The 32-byte digest the one well-formed header names, or None."""
    if len(values) != 1 or not _VALUE.fullmatch(values[0]):
        return None
    return bytes.fromhex(values[0][len(PREFIX) :])


def verify(body: bytes, values: Sequence[str], secrets: WebhookSecrets) -> bool:
    """True only when the one well-formed signature matches the body under one of the secrets."""
    claimed = parse_signature(values)
    if claimed is None:
        return False
    matched = False
    for key in secrets.hmac_keys():  # every key is tried: the time taken does not say which one matched
        matched |= hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), claimed)
    return matched


def sign(secret: str, body: bytes) -> str:
    """The header value iTwin would send (for tests, the demo and the sandbox)."""
    return PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
