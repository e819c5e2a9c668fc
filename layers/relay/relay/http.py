"""Transport: one pooled session per container, one retry policy, one place that turns responses into errors."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from relay.exceptions import (
    AuthenticationError,
    RelayError,
    UnsafeLocationError,
    VendorConnectionError,
    VendorError,
    error_from_response,
)
from relay.settings import host_of

Body = bytes | IO[bytes] | Iterable[bytes] | None
# A body factory is called once per attempt, so a retried upload starts from a fresh stream.
BodyFactory = Callable[[], Body]

_session: requests.Session | None = None


def shared_session() -> requests.Session:
    """The container's one requests.Session; urllib3 keeps its TCP connections for warm invocations."""
    global _session
    if _session is None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        _session = session
    return _session


class TokenSource(Protocol):
    def token(self) -> str: ...

    def invalidate(self) -> None: ...


def full_jitter(delay: float) -> float:
    """AWS 'full jitter': a uniform draw below the exponential delay."""
    return random.uniform(0, delay)  # noqa: S311 - spreading retries needs no cryptographic randomness


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and how long to wait. Tests pin `jitter` to make delays exact."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    # Seconds of the invocation kept free after the last wait, for tagging and recording the outcome.
    deadline_margin: float = 5.0
    jitter: Callable[[float], float] = field(default=full_jitter, compare=False)

    @staticmethod
    def should_retry(error: RelayError) -> bool:
        """Retry 5xx, 429, timeouts and connection failures; never another 4xx or a local error."""
        if isinstance(error, VendorConnectionError):
            return True
        if isinstance(error, VendorError) and error.http_status is not None:
            return error.http_status == 429 or error.http_status >= 500
        return False

    def backoff(self, attempt: int) -> float:
        """Wait before attempt `attempt + 1` (attempt counts from 1): capped exponential, then jittered."""
        return self.jitter(min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))

    def delay(self, error: RelayError, attempt: int) -> float:
        """429 waits what `retry-after` says (at least the backoff); the rest back off."""
        wait = self.backoff(attempt)
        if isinstance(error, VendorError) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


class Deadline:
    """The invocation's remaining time; `None` remaining means no limit (scripts, tests)."""

    def __init__(self, remaining_ms: Callable[[], int] | None = None, clock: Callable[[], float] = time.monotonic):
        self._remaining_ms = remaining_ms
        self._clock = clock

    @classmethod
    def from_context(cls, context: Any) -> Deadline:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        return cls(getter if callable(getter) else None)

    def remaining(self) -> float | None:
        return None if self._remaining_ms is None else self._remaining_ms() / 1000.0


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    raw: requests.Response

    def json(self) -> Any:
        try:
            return self.raw.json()
        except ValueError as exc:
            raise VendorError(
                f"expected JSON from the vendor, got {self.raw.headers.get('content-type', 'no content type')}",
                http_status=self.status,
                code="MalformedResponse",
            ) from exc


class Requestor:
    """Sends requests for one platform: auth headers, retries, and error mapping in one place."""

    def __init__(
        self,
        base_url: str,
        *,
        tokens: TokenSource | None,
        token_hosts: Iterable[str],
        default_headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
        policy: RetryPolicy | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.token_hosts = frozenset(h.lower() for h in token_hosts) | {host_of(self.base_url)}
        self.default_headers = dict(default_headers or {})
        self.session = session or shared_session()
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.sleep = sleep
        self.deadline = Deadline()

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def may_receive_token(self, url: str) -> bool:
        return host_of(url) in self.token_hosts

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        json: Any = None,
        body: BodyFactory | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        stream: bool = False,
        retry: bool = True,
        idempotent: bool = True,
    ) -> Response:
        """Send with retries; return a 2xx/3xx Response or raise a VendorError.

        A non-idempotent call (a create) is not repeated after an ambiguous connection failure: the
        caller must first find out whether it landed.
        """
        url = self.url(path_or_url)
        if auth and not self.may_receive_token(url):
            # The error names the host only: never the token, never the query string.
            raise UnsafeLocationError(f"refusing to send the bearer token to host {host_of(url)!r}")
        attempt = 0
        reauthenticated = False
        while True:
            attempt += 1
            try:
                return self._send_once(method, url, json, body, params, headers, auth, stream)
            except AuthenticationError:
                # A 401 may mean the cached token was revoked or rotated: re-read it once, then give up.
                if not auth or reauthenticated or self.tokens is None:
                    raise
                reauthenticated = True
                self.tokens.invalidate()
            except VendorError as error:
                if not retry or not self.policy.should_retry(error):
                    raise
                if not idempotent and isinstance(error, VendorConnectionError) and error.ambiguous:
                    raise
                if attempt >= self.policy.max_attempts:
                    error.gave_up = f"{attempt} attempts"
                    raise
                wait = self.policy.delay(error, attempt)
                remaining = self.deadline.remaining()
                if remaining is not None and wait + self.policy.deadline_margin > remaining:
                    error.gave_up = (
                        f"waiting {wait:.1f}s would outlive the invocation ({remaining:.1f}s left, "
                        f"{self.policy.deadline_margin:.0f}s margin)"
                    )
                    raise
                self.sleep(wait)

    def _send_once(
        self,
        method: str,
        url: str,
        json: Any,
        body: BodyFactory | None,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        auth: bool,
        stream: bool,
    ) -> Response:
        merged = {**self.default_headers, **(headers or {})}
        if auth and self.tokens is not None:
            merged["Authorization"] = f"Bearer {self.tokens.token()}"
        try:
            raw = self.session.request(
                method,
                url,
                json=json,
                data=body() if body is not None else None,
                params=params,
                headers=merged,
                timeout=self.timeout,
                stream=stream,
                allow_redirects=False,
            )
        except requests.ConnectTimeout as exc:
            raise _not_sent(f"{method} {host_of(url)}: connect timed out", "ConnectTimeout") from exc
        except requests.Timeout as exc:
            raise VendorConnectionError(f"{method} {host_of(url)} timed out", code="Timeout") from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            if isinstance(reason, NewConnectionError):
                raise _not_sent(f"{method} {host_of(url)}: connection refused", "ConnectionRefused") from exc
            raise VendorConnectionError(
                f"{method} {host_of(url)} failed: connection reset or closed", code="ConnectionError"
            ) from exc
        if raw.status_code >= 400:
            content = raw.content
            raw.close()
            raise error_from_response(raw.status_code, content, raw.headers)
        return Response(raw.status_code, raw.headers, raw)


def _not_sent(message: str, code: str) -> VendorConnectionError:
    error = VendorConnectionError(message, code=code)
    error.ambiguous = False  # no connection, so the request never reached the server
    return error
