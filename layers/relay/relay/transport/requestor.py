"""The requestor: auth header, origin check, accepted statuses, retries and error mapping for one platform."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

import requests
from urllib3.exceptions import NewConnectionError

from relay.errors import (
    AuthenticationError,
    ErrorParser,
    MalformedResponseError,
    UnexpectedStatusError,
    UnsafeLocationError,
    VendorConnectionError,
    VendorError,
    error_from_response,
    generic_error_fields,
    redact,
    redact_error,
)
from relay.transport.retry import Deadline, RetryPolicy
from relay.transport.session import shared_session
from relay.transport.urls import Origin, is_absolute, origin_of, trusted_origins

Body = bytes | IO[bytes] | Iterable[bytes] | Mapping[str, str] | None
# A body factory is called once per attempt, so a retried upload starts from a fresh stream.
BodyFactory = Callable[[], Body]
SUCCESS = range(200, 300)
ERROR_BODY_LIMIT = 64 * 1024


class TokenSource(Protocol):
    def token(self) -> str: ...

    def invalidate(self) -> None: ...

    def use_deadline(self, deadline: Deadline) -> None: ...


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    raw: requests.Response

    def json(self) -> Any:
        try:
            return self.raw.json()
        except (ValueError, RecursionError) as exc:
            raise MalformedResponseError(
                f"expected JSON from the vendor, got {self.raw.headers.get('content-type', 'no content type')}",
                http_status=self.status,
            ) from exc


class Requestor:
    """Sends requests for one platform. The token goes only to `trusted` origins, and never with a redirect."""

    def __init__(
        self,
        base_url: str,
        *,
        tokens: TokenSource | None,
        token_hosts: Iterable[str] = (),
        default_headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
        policy: RetryPolicy | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        sleep: Callable[[float], None] = time.sleep,
        local: bool | None = None,
        error_fields: ErrorParser = generic_error_fields,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        # `local`: plain-http origins may be trusted (by default only when the base itself is http).
        self.trusted: frozenset[Origin] = trusted_origins(self.base_url, token_hosts, local=local)
        self.default_headers = dict(default_headers or {})
        self.session = session or shared_session()
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.sleep = sleep
        self.deadline = Deadline()
        self.error_fields = error_fields

    def use_deadline(self, deadline: Deadline) -> None:
        """Retries must not outlive the invocation, the token's own retries included: set once per invocation."""
        self.deadline = deadline
        if self.tokens is not None:
            self.tokens.use_deadline(deadline)

    def url(self, path_or_url: str) -> str:
        """A path joins the base URL; an absolute URL is returned as it is, for `check_trusted` to judge."""
        if is_absolute(path_or_url):
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def check_trusted(self, url: str, what: str = "the bearer token") -> Origin:
        """The URL's origin, when it may receive `what`; otherwise UnsafeLocationError naming the origin only."""
        origin = origin_of(url)
        if origin not in self.trusted:
            allowed = ", ".join(sorted(str(o) for o in self.trusted))
            raise UnsafeLocationError(f"refusing to send {what} to {origin}; allowed: {allowed}")
        return origin

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
        expect: Collection[int] = SUCCESS,
    ) -> Response:
        """Send with retries; return a Response whose status is in `expect`, or raise a VendorError.

        A non-idempotent call (a create) is not repeated after an ambiguous failure (a lost answer, or a
        5xx but 503, which may follow the work): the caller must first find out whether it landed.
        """
        url = self.url(path_or_url)
        if auth:
            self.check_trusted(url)
        else:
            origin_of(url)  # even without a token, never send to a URL the parsers read differently
        attempt = 0
        reauthenticated = False
        while True:
            attempt += 1
            try:
                return self._send_once(method, url, json, body, params, headers, auth, stream, expect)
            except AuthenticationError:
                # A 401 may mean the cached token was revoked or rotated: re-read it once, then give up.
                if not auth or reauthenticated or self.tokens is None:
                    raise
                reauthenticated = True
                self.tokens.invalidate()
            except VendorError as error:
                if not retry or not self.policy.should_retry(error):
                    raise
                if not idempotent and error.ambiguous:
                    raise
                if not self.pause(error, attempt):
                    raise

    def pause(self, error: VendorError, attempt: int) -> bool:
        """Wait as the policy says before attempt `attempt + 1`; False (with `gave_up` set) when not to retry."""
        wait = self.policy.delay(error, attempt)
        reason = self.policy.give_up_reason(error, attempt, wait, self.deadline.remaining())
        if reason is not None:
            error.gave_up = reason
            return False
        self.sleep(wait)
        return True

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
        expect: Collection[int],
    ) -> Response:
        merged = {**self.default_headers, **(headers or {})}
        token = self.tokens.token() if auth and self.tokens is not None else None
        if token is not None:
            merged["Authorization"] = f"Bearer {token}"
        host = origin_of(url).host
        try:
            raw = self.session.request(
                method,
                url,
                json=json,
                data=body() if body is not None else None,
                params=params,
                headers=merged,
                timeout=self.timeout,
                stream=True,  # so an unexpected answer is read only up to ERROR_BODY_LIMIT
                allow_redirects=False,
            )
        except requests.ConnectTimeout as exc:
            raise _not_sent(f"{method} {host}: connect timed out", "ConnectTimeout") from exc
        except requests.Timeout as exc:
            raise VendorConnectionError(f"{method} {host} timed out", code="Timeout") from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            if isinstance(reason, NewConnectionError):
                raise _not_sent(f"{method} {host}: connection refused", "ConnectionRefused") from exc
            raise VendorConnectionError(
                f"{method} {host} failed: connection reset or closed", code="ConnectionError"
            ) from exc
        except requests.RequestException as exc:
            # Anything else requests refuses (an invalid header value, for one) may quote the header: the
            # token. Name the kind of failure only, and drop the chain.
            raise VendorError(
                f"{method} {host}: the request could not be sent ({type(exc).__name__})", code="RequestError"
            ) from None
        if raw.status_code in expect:
            if not stream:
                try:
                    _ = raw.content  # read now, as a non-streamed request would, and free the connection
                except requests.RequestException as exc:
                    # The answer ended before its Content-Length (or stalled): the call may have been done.
                    raise VendorConnectionError(
                        f"{method} {host}: the answer was cut short", code="ConnectionError"
                    ) from exc
            return Response(raw.status_code, raw.headers, raw)
        content = redact(_capped(raw).decode("utf-8", "replace"), [token or ""])
        raw.close()
        if raw.status_code >= 400:
            # Before anyone logs or stores it: a vendor may echo the Authorization header back.
            raise redact_error(
                error_from_response(raw.status_code, content, raw.headers, self.error_fields), [token or ""]
            )
        # A redirect or an undocumented success is never followed or trusted: the token would go with it.
        raise UnexpectedStatusError(
            f"{method} {host} answered {raw.status_code}; expected {_describe(expect)}", http_status=raw.status_code
        )


def _capped(raw: requests.Response) -> bytes:
    """At most ERROR_BODY_LIMIT bytes of an answer we will not use: a hostile host may stream forever."""
    try:
        return next(raw.iter_content(ERROR_BODY_LIMIT), b"")
    except requests.RequestException:
        return b""


def _describe(expect: Collection[int]) -> str:
    if isinstance(expect, range):
        return f"{expect.start}-{expect.stop - 1}"
    return " or ".join(str(s) for s in sorted(expect))


def _not_sent(message: str, code: str) -> VendorConnectionError:
    error = VendorConnectionError(message, code=code)
    error.ambiguous = False  # no connection, so the request never reached the server
    return error
