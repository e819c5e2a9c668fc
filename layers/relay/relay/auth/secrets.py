"""One platform's secret, read through Powertools' cached SecretsProvider; values never reach repr or errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from relay.errors import ConfigurationError

# Refresh this many seconds before a token's stated expiry, so a token never dies mid-transfer.
EXPIRY_SKEW = 120.0
KNOWN_FIELDS = frozenset(
    {"client_id", "client_secret", "token_url", "scope", "access_token", "expires_at", "refresh_token"}
    | {"refresh_token_issued_at"}
)


def default_secrets_provider() -> SecretsProvider:
    """Powertools' SecretsProvider on a client of boto3's default session, which the function's other clients
    share. `SecretsProvider()` makes a session of its own, loading botocore's endpoint data a second time:
    about 100 ms of a cold start."""
    return SecretsProvider(boto3_client=boto3.client("secretsmanager"))


@dataclass(frozen=True)
class PlatformSecret:
    """One platform's secret. Secret values never appear in repr, logs or errors."""

    secret_id: str
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str
    scope: str
    access_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    refresh_token: str | None = field(default=None, repr=False)
    # When the refresh token was issued (epoch seconds): APS refresh tokens die 15 days after it.
    refresh_token_issued_at: float | None = None
    # Fields the relay does not read (the signed-in user, notes): kept as they are when the secret is rewritten.
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, raw: object, *, secret_id: str, default_token_url: str, default_scope: str) -> PlatformSecret:
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"secret {secret_id!r} must be a JSON object")

        def text(name: str, required: bool) -> str | None:
            value = raw.get(name)
            if value is None or value == "":
                if required:
                    raise ConfigurationError(f"secret {secret_id!r}: field {name!r} is missing")
                return None
            if not isinstance(value, str):
                raise ConfigurationError(f"secret {secret_id!r}: field {name!r} must be a string")
            if not value.isprintable() or value != value.strip():
                # A pasted newline would make requests quote the header, token and all, in its error.
                raise ConfigurationError(f"secret {secret_id!r}: field {name!r} holds whitespace or control characters")
            return value

        def epoch(name: str) -> float | None:
            value = raw.get(name)
            if value in (None, ""):
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ConfigurationError(f"secret {secret_id!r}: field {name!r} must be epoch seconds")
            try:
                return float(value)
            except ValueError as exc:
                raise ConfigurationError(f"secret {secret_id!r}: field {name!r} must be epoch seconds") from exc

        token_url = text("token_url", False) or default_token_url
        if not token_url.startswith(("https://", "http://")):
            raise ConfigurationError(f"secret {secret_id!r}: field 'token_url' must be an http(s) URL")
        return cls(
            secret_id=secret_id,
            client_id=text("client_id", True) or "",
            client_secret=text("client_secret", True) or "",
            token_url=token_url,
            scope=text("scope", False) or default_scope,
            access_token=text("access_token", False),
            expires_at=epoch("expires_at"),
            refresh_token=text("refresh_token", False),
            refresh_token_issued_at=epoch("refresh_token_issued_at"),
            extra={k: v for k, v in raw.items() if k not in KNOWN_FIELDS},
        )

    def fresh_access_token(self, now: float) -> str | None:
        if self.access_token and self.expires_at is not None and self.expires_at - EXPIRY_SKEW > now:
            return self.access_token
        return None

    def values(self) -> tuple[str, ...]:
        """Every secret value held, for redacting them from error texts."""
        return tuple(v for v in (self.client_secret, self.access_token, self.refresh_token) if v)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            **self.extra,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "token_url": self.token_url,
            "scope": self.scope,
        }
        for name in ("access_token", "expires_at", "refresh_token", "refresh_token_issued_at"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return json.dumps(data)


class SecretStore:
    """Reads a platform secret through Powertools' cached SecretsProvider."""

    def __init__(
        self,
        secret_id: str,
        *,
        default_token_url: str,
        default_scope: str,
        provider: SecretsProvider | None = None,
        max_age: int = 300,
    ) -> None:
        if not secret_id:
            raise ConfigurationError("no secret id configured for this platform")
        self.secret_id = secret_id
        self.default_token_url = default_token_url
        self.default_scope = default_scope
        self.provider = provider or default_secrets_provider()
        self.max_age = max_age

    def get(self, *, force: bool = False) -> PlatformSecret:
        try:
            raw = self.provider.get(self.secret_id, max_age=self.max_age, transform="json", force_fetch=force)
        except TransformParameterError as exc:
            raise ConfigurationError(f"secret {self.secret_id!r} is not valid JSON") from exc
        except GetParameterError as exc:
            raise ConfigurationError(
                f"secret {self.secret_id!r} could not be read: {type(exc.__cause__).__name__}"
            ) from exc
        return PlatformSecret.parse(
            raw, secret_id=self.secret_id, default_token_url=self.default_token_url, default_scope=self.default_scope
        )
