"""Access tokens: iTwin client-credentials minting, APS stored tokens, and the single writer that refreshes them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.auth.secrets import EXPIRY_SKEW, PlatformSecret, SecretStore
from relay.errors import (
    ApsLoginRequiredError,
    ConfigurationError,
    ErrorFields,
    TokenEndpointError,
    UnsafeLocationError,
    VendorError,
    generic_error_fields,
    redact,
)
from relay.observability import tracer
from relay.transport.requestor import Requestor
from relay.transport.retry import Deadline


class ClientCredentialsTokens:
    """iTwin service-app tokens: the secret's own token while fresh, else one minted and cached in memory."""

    def __init__(self, store: SecretStore, endpoint: Requestor, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        # Posts to the token URL through the same retry policy as every vendor call; it carries no bearer token.
        self.endpoint = endpoint
        self.clock = clock
        self._lock = threading.Lock()
        self._minted: tuple[str, float] | None = None
        self._force_next = False

    def invalidate(self) -> None:
        with self._lock:
            self._minted = None
            self._force_next = True

    def use_deadline(self, deadline: Deadline) -> None:
        self.endpoint.use_deadline(deadline)

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
            payload = self._mint(secret)
            self._minted = (payload["access_token"], now + payload["expires_in"])
            return str(payload["access_token"])

    @tracer.capture_method(capture_response=False)
    def _mint(self, secret: PlatformSecret) -> dict[str, Any]:
        form = {
            "grant_type": "client_credentials",
            "client_id": secret.client_id,
            "client_secret": secret.client_secret,
            "scope": secret.scope,
        }
        return request_token(self.endpoint, secret.token_url, form)


class StoredTokens:
    """APS user tokens: handlers only read; the scheduled refresher is the single writer of the secret."""

    def __init__(self, store: SecretStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._force_next = False

    def invalidate(self) -> None:
        self._force_next = True

    def use_deadline(self, deadline: Deadline) -> None:
        """Nothing to bound: handlers only read the secret."""

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
            # Never a refresh here: the refresh token works once, and only the refresher may spend it.
            raise ApsLoginRequiredError(
                f"secret {secret.secret_id!r} holds no fresh access token; is the token refresher running? "
                "If ApsLoginRequiredAlarm fires, run `python -m relay.cli aps-login` again"
            )
        return fresh


def oauth_error_fields(body: object) -> ErrorFields:
    """RFC 6749 section 5.2: `{"error": "invalid_client", "error_description": ...}`."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        return body["error"], description if isinstance(description, str) else None, None, []
    return generic_error_fields(body)


def request_token(endpoint: Requestor, url: str, form: Mapping[str, str], *, idempotent: bool = True) -> dict[str, Any]:
    """POST an OAuth token request; return {access_token, expires_in, refresh_token?} or raise without secrets.

    A refresh grant is not idempotent: its refresh token dies on first use, so a lost answer is not resent.
    """
    # The client secret follows the same origin rule as the bearer token: a token_url on an unlisted (or
    # plain-http) host is the secret's misconfiguration, and nothing is sent there. The refresher too.
    try:
        where = endpoint.check_trusted(url, "the client secret")
    except UnsafeLocationError as error:
        raise ConfigurationError(
            f"field 'token_url' of the secret is not allowed ({error.message}); "
            "list its host in RELAY_ALLOWED_TOKEN_HOSTS"
        ) from None
    try:
        response = endpoint.request(
            "POST",
            url,
            body=lambda: dict(form),
            auth=False,
            headers={"Accept": "application/json"},
            expect=(200,),
            idempotent=idempotent,
        )
        payload = response.json()
    except VendorError as error:
        # Token endpoints may echo the request: keep the code and status, nothing of the body.
        held = [v for k, v in form.items() if k in ("client_secret", "refresh_token", "code", "code_verifier")]
        code = redact(error.code, held)
        refused = bool(error.http_status and 400 <= error.http_status < 500 and error.http_status != 429)
        failure = TokenEndpointError(
            f"token endpoint {where} answered {error.http_status or 'nothing'}: {code}",
            # The OAuth code (invalid_client, invalid_grant) says what to fix; 5xx and silence say "unreachable".
            code=code if error.http_status and 400 <= error.http_status < 500 else "TokenEndpointError",
        )
        failure.refused = refused
        raise failure from None
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token or not token.isprintable() or " " in token:
        raise TokenEndpointError(f"token endpoint {where} answered without a usable access_token")
    try:
        expires_in = float(payload.get("expires_in", 3600))
    except (TypeError, ValueError):
        raise TokenEndpointError(f"token endpoint {where} answered a non-numeric expires_in") from None
    result: dict[str, Any] = {"access_token": token, "expires_in": expires_in}
    for optional in ("refresh_token", "scope"):
        if isinstance(payload.get(optional), str) and payload[optional]:
            result[optional] = payload[optional]
    return result


def rotated(secret: PlatformSecret, payload: Mapping[str, Any], now: float) -> PlatformSecret:
    """The secret after a token response: new access token, expiry, and (APS) the new refresh token and its birth."""
    fresh_refresh = payload.get("refresh_token")
    return replace(
        secret,
        access_token=payload["access_token"],
        expires_at=now + float(payload["expires_in"]),
        refresh_token=fresh_refresh or secret.refresh_token,
        refresh_token_issued_at=now if fresh_refresh else secret.refresh_token_issued_at,
    )


def refresh_secret(
    store: SecretStore,
    secrets_client: Any,
    endpoint: Requestor,
    *,
    grant: str,
    clock: Callable[[], float] = time.time,
    secret: PlatformSecret | None = None,
) -> PlatformSecret:
    """The single writer: get a new token with `grant` and store it (and APS's rotated refresh token).

    APS refresh tokens rotate on every use and the old one dies at once, so only this function (run by
    one scheduled Lambda with reserved concurrency 1, under a lease) may refresh; handlers only read the secret.
    The new pair is written at once, before anything else: until then it exists only in this process.
    `secret` is the one the caller just read with force_fetch, if it did.
    """
    secret = secret or store.get(force=True)
    form = {"grant_type": grant, "client_id": secret.client_id, "client_secret": secret.client_secret}
    if grant == "refresh_token":
        if not secret.refresh_token:
            raise ConfigurationError(f"secret {secret.secret_id!r}: field 'refresh_token' is missing")
        form["refresh_token"] = secret.refresh_token
    else:
        form["scope"] = secret.scope
    payload = request_token(endpoint, secret.token_url, form, idempotent=grant != "refresh_token")
    updated = rotated(secret, payload, clock())
    try:
        secrets_client.put_secret_value(SecretId=secret.secret_id, SecretString=updated.to_json())
    except (ClientError, BotoCoreError) as exc:
        reason = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
        if grant != "refresh_token":
            raise ConfigurationError(f"secret {secret.secret_id!r} could not be written: {reason}") from exc
        # The endpoint has already killed the old refresh token, and the new one is in no secret: lost.
        raise ApsLoginRequiredError(
            f"secret {secret.secret_id!r} could not be written ({reason}) after the refresh token rotated; "
            "run `python -m relay.cli aps-login` again"
        ) from exc
    return updated
