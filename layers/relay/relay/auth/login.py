"""APS three-legged sign-in from a laptop: PKCE, a loopback callback, the code exchange, and the secret written once."""

from __future__ import annotations

import base64
import errno
import hashlib
import html
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from botocore.exceptions import BotoCoreError, ClientError

from relay import constants as c
from relay.auth.secrets import PlatformSecret
from relay.auth.tokens import request_token, rotated
from relay.errors import (
    CallbackPortInUseError,
    ConfigurationError,
    ConsentDeniedError,
    LoginError,
    LoginTimeoutError,
    StateMismatchError,
)
from relay.transport.requestor import Requestor

# The redirect URI's host and the address the callback server binds for it.
LOOPBACK_HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "::1": "::1"}

# Seconds an idle callback connection may hold the loopback server before it is dropped.
IDLE_CONNECTION_SECONDS = 2.0


def pkce_pair() -> tuple[str, str]:
    """RFC 7636: a random code_verifier (64 unreserved characters) and its S256 code_challenge."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def authorize_url(api_url: str, client_id: str, redirect_uri: str, scope: str, state: str, challenge: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return f"{api_url.rstrip('/')}{c.DEFAULT_APS_AUTHORIZE_PATH}?{urlencode(query)}"


@dataclass(frozen=True)
class Loopback:
    """Where the callback server listens, read from the redirect URI."""

    host: str
    port: int
    path: str


def loopback(redirect_uri: str) -> Loopback:
    """The redirect URI must come back to this machine over plain http (RFC 8252 section 7.3)."""
    parts = urlsplit(redirect_uri)
    host = LOOPBACK_HOSTS.get((parts.hostname or "").lower())
    if parts.scheme != "http" or host is None or parts.username or parts.query or parts.fragment:
        raise ConfigurationError(
            f"redirect URI {redirect_uri!r} must be http://localhost:<port>/<path> (or 127.0.0.1, [::1]): "
            "the callback is served on this machine"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigurationError(f"redirect URI {redirect_uri!r} has a bad port") from None
    return Loopback(host, port, parts.path or "/")


def check_callback(query: Mapping[str, str], expected_state: str) -> str:
    """The authorization code from the callback's query, or the named error. The state is checked first: a
    callback that is not the answer to our request is believed in nothing, its error included."""
    if not constant_time_equal(query.get("state", ""), expected_state):
        raise StateMismatchError("the callback's state is not the one this sign-in sent; nothing was written")
    error = query.get("error")
    if error == "access_denied":
        raise ConsentDeniedError("the user denied consent (error=access_denied); nothing was written")
    if error:
        safe = "".join(ch for ch in error if ch.isalnum() or ch in "_-")[:64]
        raise LoginError(f"the sign-in answered error={safe}; nothing was written", code="AuthorizeError")
    code = query.get("code")
    if not code:
        raise LoginError("the callback carried no code; nothing was written", code="NoAuthorizationCode")
    return code


def constant_time_equal(a: str, b: str) -> bool:
    return bool(a) and secrets.compare_digest(a.encode(), b.encode())


class _LoopbackServer(HTTPServer):
    allow_reuse_address = False  # a port another program listens on is an error, never shared


class _LoopbackServerV6(_LoopbackServer):
    address_family = socket.AF_INET6


class CallbackServer:
    """A one-shot loopback HTTP server: it keeps the first request to the callback path, and answers a page."""

    def __init__(self, where: Loopback) -> None:
        self.where = where
        self.query: dict[str, str] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # A connection that sends nothing (browsers open spare ones) is dropped after this long, so it
            # never holds the one-at-a-time server past the login's own timeout.
            timeout = IDLE_CONNECTION_SECONDS

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != outer.where.path or outer.query is not None:
                    self.send_error(404)
                    return
                outer.query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                message = "Denied." if "error" in outer.query else "Received. You can close this tab."
                page = f"<!doctype html><title>aps-login</title><p>{html.escape(message)} Back to the terminal.</p>"
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                """The request line carries the code: never printed."""

        try:
            self.httpd: HTTPServer = (_LoopbackServerV6 if ":" in where.host else _LoopbackServer)(
                (where.host, where.port), Handler
            )
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise CallbackPortInUseError(
                    f"port {where.port} on {where.host} is taken (or not allowed); free it or pass another "
                    "--redirect-uri (it must also be a callback URL of the APS app)"
                ) from None
            raise

    def wait(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> dict[str, str]:
        until = clock() + timeout
        while self.query is None:
            left = until - clock()
            if left <= 0:
                raise LoginTimeoutError(f"no callback within {timeout:.0f} s; nothing was written")
            self.httpd.timeout = min(left, 0.5)
            self.httpd.handle_request()
        return self.query

    def close(self) -> None:
        self.httpd.server_close()

    def __enter__(self) -> CallbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LoginOptions:
    secret_id: str
    api_url: str = c.DEFAULT_APS_API_URL
    redirect_uri: str = c.DEFAULT_APS_REDIRECT_URI
    scope: str | None = None
    timeout: float = c.DEFAULT_APS_LOGIN_TIMEOUT
    userinfo_url: str = c.DEFAULT_APS_USERINFO_URL


@dataclass(frozen=True)
class LoginResult:
    user: str | None
    scope: str
    expires_at: float
    refresh_token_issued_at: float
    version_id: str | None


def read_secret(secrets_client: Any, secret_id: str, default_token_url: str) -> PlatformSecret:
    try:
        raw = secrets_client.get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "ResourceNotFoundException":
            raise ConfigurationError(
                f"secret {secret_id!r} does not exist: deploy the stack first (it creates <stack>/aps) "
                "and put the APS app's client_id and client_secret in it"
            ) from None
        raise ConfigurationError(f"secret {secret_id!r} could not be read: {code}") from None
    except BotoCoreError as exc:
        raise ConfigurationError(f"secret {secret_id!r} could not be read: {type(exc).__name__}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigurationError(f"secret {secret_id!r} is not valid JSON") from None
    return PlatformSecret.parse(
        data, secret_id=secret_id, default_token_url=default_token_url, default_scope=c.DEFAULT_APS_SCOPE
    )


def who(userinfo_url: str, token: str, session: requests.Session) -> str | None:
    """The signed-in user's name and email from OpenID userinfo, or None: a failure here undoes nothing.

    The fresh token goes over https, or over http only to this machine (the sandbox): the host is compared
    whole, so `http://localhost.example.net` is refused."""
    where = urlsplit(userinfo_url)
    if not (where.scheme == "https" or (where.scheme == "http" and where.hostname in LOOPBACK_HOSTS)):
        return None
    try:
        answer = session.get(userinfo_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        data = answer.json() if answer.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    name, email = data.get("name"), data.get("email") or data.get("preferred_username")
    parts = [p for p in (name, f"<{email}>" if email else None) if isinstance(p, str) and p]
    return " ".join(parts) or None


def aps_login(
    options: LoginOptions,
    *,
    secrets_client: Any,
    endpoint: Requestor,
    opener: Callable[[str], object],
    out: TextIO,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.time,
) -> LoginResult:
    """Sign a user in and write the pair into the secret as a new version. Every failure before the write
    raises a named error and leaves the secret as it was. Nothing printed holds a token or the code."""
    where = loopback(options.redirect_uri)
    default_token_url = f"{options.api_url.rstrip('/')}/authentication/v2/token"
    secret = read_secret(secrets_client, options.secret_id, default_token_url)
    scope = options.scope or secret.scope
    state = secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    url = authorize_url(options.api_url, secret.client_id, options.redirect_uri, scope, state, challenge)
    with CallbackServer(where) as server:
        print(
            f"Sign in to Autodesk with this URL (it opens in your browser when one is available):\n\n  {url}\n",
            file=out,
        )
        print(f"Waiting up to {options.timeout:.0f} s for the callback on {options.redirect_uri} ...", file=out)
        threading.Thread(target=opener, args=(url,), daemon=True).start()
        query = server.wait(options.timeout)
    code = check_callback(query, state)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": options.redirect_uri,
        "client_id": secret.client_id,
        "client_secret": secret.client_secret,
    }
    # A code works once: a lost answer is not resent (idempotent=False), the user signs in again.
    payload = request_token(endpoint, secret.token_url, form, idempotent=False)
    if "refresh_token" not in payload:
        raise LoginError("the token endpoint answered without a refresh_token; nothing was written")
    now = clock()
    user = who(options.userinfo_url, payload["access_token"], session or requests.Session())
    updated = rotated(secret, payload, now)
    extra = {**updated.extra, "signed_in_at": int(now)}
    if user:
        extra["signed_in_as"] = user
    updated = replace(updated, extra=extra)
    try:
        written = secrets_client.put_secret_value(SecretId=options.secret_id, SecretString=updated.to_json())
    except (ClientError, BotoCoreError) as exc:
        reason = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
        raise ConfigurationError(f"secret {options.secret_id!r} could not be written: {reason}") from None
    granted = str(payload.get("scope") or scope)
    result = LoginResult(user, granted, float(updated.expires_at or now), now, written.get("VersionId"))
    print(summary(result, options.secret_id, now), file=out)
    return result


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def summary(result: LoginResult, secret_id: str, now: float) -> str:
    minutes = max(0, round((result.expires_at - now) / 60))
    return "\n".join(
        [
            f"Signed in as {result.user or '(the user profile could not be read)'}",
            f"  scopes:        {result.scope}",
            f"  access token:  expires {_when(result.expires_at)} (in {minutes} min); the refresher renews it",
            f"  refresh token: issued {_when(result.refresh_token_issued_at)}; it lasts 15 days and each refresh "
            "replaces it",
            f"  secret:        {secret_id} (new version {result.version_id or '?'})",
        ]
    )
