"""OAuth credentials from Secrets Manager (cached through Powertools parameters) and access tokens from them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import requests
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from relay.exceptions import AuthenticationError, ConfigurationError, RelayError, error_from_response
from relay.http import shared_session
from relay.observability import tracer

# Refresh this many seconds before a token's stated expiry, so a token never dies mid-transfer.
EXPIRY_SKEW = 120.0


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
            return value

        expires_raw = raw.get("expires_at")
        expires_at: float | None = None
        if expires_raw not in (None, ""):
            if isinstance(expires_raw, bool) or not isinstance(expires_raw, (int, float, str)):
                raise ConfigurationError(f"secret {secret_id!r}: field 'expires_at' must be epoch seconds")
            try:
                expires_at = float(expires_raw)
            except ValueError as exc:
                raise ConfigurationError(f"secret {secret_id!r}: field 'expires_at' must be epoch seconds") from exc
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
            expires_at=expires_at,
            refresh_token=text("refresh_token", False),
        )

    def fresh_access_token(self, now: float) -> str | None:
        if self.access_token and self.expires_at is not None and self.expires_at - EXPIRY_SKEW > now:
            return self.access_token
        return None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "token_url": self.token_url,
            "scope": self.scope,
        }
        for name in ("access_token", "expires_at", "refresh_token"):
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
        self.provider = provider or SecretsProvider()
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


class ClientCredentialsTokens:
    """iTwin service-app tokens: the secret's own token while fresh, else one minted and cached in memory."""

    def __init__(
        self,
        store: SecretStore,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        timeout: tuple[float, float] = (5.0, 15.0),
    ) -> None:
        self.store = store
        self.session = session or shared_session()
        self.clock = clock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._minted: tuple[str, float] | None = None
        self._force_next = False

    def invalidate(self) -> None:
        with self._lock:
            self._minted = None
            self._force_next = True

    def token(self) -> str:
        with self._lock:
            now = self.clock()
            secret = self.store.get(force=self._force_next)
            self._force_next = False
            stored = secret.fresh_access_token(now)
            if stored:
                return stored
            if self._minted and self._minted[1] - EXPIRY_SKEW > now:
                return self._minted[0]
            token, expires_in = self._mint(secret)
            self._minted = (token, now + expires_in)
            return token

    @tracer.capture_method(capture_response=False)
    def _mint(self, secret: PlatformSecret) -> tuple[str, float]:
        payload = request_token(
            self.session,
            secret.token_url,
            {
                "grant_type": "client_credentials",
                "client_id": secret.client_id,
                "client_secret": secret.client_secret,
                "scope": secret.scope,
            },
            self.timeout,
        )
        return payload["access_token"], payload["expires_in"]


class StoredTokens:
    """APS user tokens: handlers only read; the scheduled refresher is the single writer of the secret."""

    def __init__(self, store: SecretStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._force_next = False

    def invalidate(self) -> None:
        self._force_next = True

    def token(self) -> str:
        secret = self.store.get(force=self._force_next)
        self._force_next = False
        fresh = secret.fresh_access_token(self.clock())
        if fresh is None and secret.access_token and secret.expires_at is None:
            fresh = secret.access_token  # no stated expiry: let the API's 401 tell us
        if fresh is None:
            secret = self.store.get(force=True)
            fresh = secret.fresh_access_token(self.clock())
        if fresh is None:
            raise AuthenticationError(
                f"secret {secret.secret_id!r} holds no fresh access token; is the token refresher running?",
                code="TokenExpired",
            )
        return fresh


def request_token(
    session: requests.Session, url: str, form: Mapping[str, str], timeout: tuple[float, float]
) -> dict[str, Any]:
    """POST an OAuth token request; return {access_token, expires_in, refresh_token?} or raise without secrets."""
    try:
        raw = session.post(url, data=dict(form), timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise RelayError(f"token endpoint {url} unreachable: {type(exc).__name__}", code="TokenEndpointError") from None
    if raw.status_code >= 400:
        error = error_from_response(raw.status_code, raw.content, raw.headers)
        error.body = None  # token endpoints may echo the request; keep nothing of it
        raise error
    try:
        payload = raw.json()
        token = payload["access_token"]
        expires_in = float(payload.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError):
        raise RelayError(f"token endpoint {url} answered without an access_token", code="TokenEndpointError") from None
    if not isinstance(token, str) or not token:
        raise RelayError(f"token endpoint {url} answered without an access_token", code="TokenEndpointError")
    result: dict[str, Any] = {"access_token": token, "expires_in": expires_in}
    if isinstance(payload.get("refresh_token"), str):
        result["refresh_token"] = payload["refresh_token"]
    return result


def rotated(secret: PlatformSecret, payload: Mapping[str, Any], now: float) -> PlatformSecret:
    """The secret after a token response: new access token, expiry, and (APS) the new refresh token."""
    return replace(
        secret,
        access_token=payload["access_token"],
        expires_at=now + float(payload["expires_in"]),
        refresh_token=payload.get("refresh_token", secret.refresh_token),
    )


def refresh_secret(
    store: SecretStore,
    secrets_client: Any,
    *,
    grant: str,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.time,
    timeout: tuple[float, float] = (5.0, 15.0),
) -> PlatformSecret:
    """The single writer: get a new token with `grant` and store it (and APS's rotated refresh token).

    APS refresh tokens rotate on every use and the old one dies at once, so only this function (run by
    one scheduled Lambda with reserved concurrency 1) may refresh; handlers only read the secret.
    """
    secret = store.get(force=True)
    form = {"grant_type": grant, "client_id": secret.client_id, "client_secret": secret.client_secret}
    if grant == "refresh_token":
        if not secret.refresh_token:
            raise ConfigurationError(f"secret {secret.secret_id!r}: field 'refresh_token' is missing")
        form["refresh_token"] = secret.refresh_token
    else:
        form["scope"] = secret.scope
    payload = request_token(session or shared_session(), secret.token_url, form, timeout)
    updated = rotated(secret, payload, clock())
    secrets_client.put_secret_value(SecretId=secret.secret_id, SecretString=updated.to_json())
    return updated
