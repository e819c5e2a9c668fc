"""One error language: every failure is a RelayError whose class carries its code and its outcome."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

REQUEST_ID_HEADERS = ("x-correlation-id", "x-request-id", "request-id", "x-ads-request-id")
REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# What a code may hold: it lands in an S3 tag (a restricted character set) and in logs.
_CODE = re.compile(r"[^A-Za-z0-9_.:-]")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Outcome(StrEnum):
    """What a flow does with an upload when an error ends its attempt."""

    REJECTED = "rejected"  # the file or request itself is refused: tag it, remember it
    FAILED = "failed"  # the target, access or configuration is wrong: tag it, remember it
    RETRY = "retry"  # may pass later: back on the queue, and tagged failed on the last delivery
    SKIPPED = "skipped"  # nothing to relay (object deleted or overwritten): record it, never remember it


class RelayError(Exception):
    """Base error. `code` lands in the object's `relay-error` tag and in the record."""

    code: str = "RelayError"
    outcome: Outcome = Outcome.FAILED

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# -- the relay's own checks ----------------------------------------------------------------------


class ConfigurationError(RelayError):
    """A setting or a secret is missing or malformed; names the field, never its value.

    Retried: an operator can fix a secret while the message waits on the queue.
    """

    code = "ConfigurationError"
    outcome = Outcome.RETRY


class TokenEndpointError(RelayError):
    """The OAuth token endpoint refused the credentials or could not be reached.

    Never the file's fault, so never `rejected`: retried, and `failed` on the last delivery.
    """

    code = "TokenEndpointError"
    outcome = Outcome.RETRY
    # True when the endpoint answered 4xx (not 429): it refused the client, rather than being unreachable.
    refused = False


class MalformedMessageError(RelayError):
    """The SQS message is not an S3 notification we can read."""

    code = "MalformedMessage"
    outcome = Outcome.RETRY


class InvalidUploadError(RelayError):
    """The uploaded object cannot become an attachment (bad key, empty, too large, bad metadata)."""

    code = "InvalidUpload"
    outcome = Outcome.REJECTED


class UnsafeLocationError(RelayError):
    """A URL names a host, scheme or port that may not receive the bearer token (or is ambiguous)."""

    code = "UnsafeLocation"


class ObjectGoneError(RelayError):
    """The object (or that version of it) was deleted before it was processed."""

    code = "ObjectDeleted"
    outcome = Outcome.SKIPPED


class SupersededError(RelayError):
    """An unversioned object was overwritten before this notification was processed."""

    code = "Superseded"
    outcome = Outcome.SKIPPED


class ObjectStoreError(RelayError):
    """S3 could not be read or tagged (throttling, a network error, a permission)."""

    code = "S3Error"
    outcome = Outcome.RETRY


class ClaimConflictError(RelayError):
    """The attachment our create made was claimed by another upload's adoption first: ours is made anew."""

    code = "CreateRaced"
    outcome = Outcome.RETRY


class UnresolvedCreateError(RelayError):
    """A create may have landed, and the listing that would find it failed: look again, never POST blind."""

    code = "CreateUnresolved"
    outcome = Outcome.RETRY


class RecordStoreError(RelayError):
    """The transfers table could not be read or written."""

    code = "RecordStoreError"
    outcome = Outcome.RETRY


class QueueError(RelayError):
    """SQS refused or failed a send: the work was not handed over."""

    code = "QueueError"
    outcome = Outcome.RETRY

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.unsent: list[Any] = []  # what was not handed over, so the caller can account for it


class CopyTimedOutError(RelayError):
    """A copy into the archive could not finish in the time this invocation had left: the queue finishes it."""

    code = "CopyTimedOut"
    outcome = Outcome.RETRY


class ArchiveJobNotFoundError(RelayError):
    """No archive job has that id (or it expired)."""

    code = "ArchiveJobNotFound"


class ApsLoginRequiredError(RelayError):
    """No usable APS user token: the refresh token is dead or missing, so a person must run `aps-login` again.

    Retried, so an upload waiting on the queue gets its chance once someone signs in; `failed` on its last delivery.
    """

    code = "ApsLoginRequired"
    outcome = Outcome.RETRY


class NotBim360ProjectError(RelayError):
    """The project has no RFI container: it is not a BIM 360 project (an ACC project, say), so no RFI takes files."""

    code = "NotBim360Project"


class StepFailedError(RelayError):
    """A vendor refused one step of a multi-step transfer for good; `step` names it (project, storage, attach...)."""

    def __init__(self, message: str, *, step: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.step = step


class LoginError(RelayError):
    """The sign-in command stopped before it wrote anything; each subclass names why."""

    code = "LoginFailed"


class ConsentDeniedError(LoginError):
    code = "ConsentDenied"


class StateMismatchError(LoginError):
    code = "StateMismatch"


class LoginTimeoutError(LoginError):
    code = "LoginTimeout"


class CallbackPortInUseError(LoginError):
    code = "CallbackPortInUse"


class InvalidInputError(RelayError):
    """A path or query value that the API refuses; `field` names it."""

    code = "ValidationError"
    outcome = Outcome.REJECTED

    def __init__(self, message: str, *, field: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


# -- vendor answers ------------------------------------------------------------------------------


class VendorError(RelayError):
    """A vendor API answered with an error, or could not be reached."""

    code = "VendorError"
    # True when the request may have done its work although the caller cannot tell (a lost answer, a 500):
    # repeating a non-idempotent call (a create) could then do it twice. The caller must look first.
    ambiguous = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        target: str | None = None,
        details: list[dict[str, Any]] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
        self.target = target
        self.details = details or []
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body
        self.gave_up: str | None = None

    def __str__(self) -> str:
        status = f"HTTP {self.http_status} " if self.http_status else ""
        text = f"{status}{self.code}: {self.message}"
        if self.target:
            text += f" (target: {self.target})"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        if self.gave_up:
            text += f"; gave up: {self.gave_up}"
        return text


class AuthenticationError(VendorError):
    code = "Unauthorized"


class PermissionDeniedError(VendorError):
    code = "Forbidden"


class NotFoundError(VendorError):
    code = "NotFound"


class InvalidRequestError(VendorError):
    code = "InvalidRequest"
    outcome = Outcome.REJECTED


class TooLargeError(VendorError):
    code = "RequestTooLarge"
    outcome = Outcome.REJECTED


class RateLimitedError(VendorError):
    code = "RateLimited"
    outcome = Outcome.RETRY


class ServerError(VendorError):
    code = "ServerError"
    outcome = Outcome.RETRY

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        # A 5xx may come after the work was done (a 500, 502, 504, ...); 503 says the server did not take it.
        self.ambiguous = self.http_status != 503


class MalformedResponseError(VendorError):
    """A success status whose body we cannot read (an HTML page, truncated JSON): a vendor hiccup."""

    code = "MalformedResponse"
    outcome = Outcome.RETRY


class MissingLocationError(VendorError):
    """A create answered 201 without the Location that says where the file goes."""

    code = "MissingLocation"


class UnexpectedStatusError(VendorError):
    """A status the vendor page does not document for this call (a redirect, a 200 for a create)."""

    code = "UnexpectedStatus"


class IncompleteDownloadError(VendorError):
    """A download ended with a different number of bytes than the listing said the file holds."""

    code = "IncompleteDownload"
    outcome = Outcome.RETRY


class VendorConnectionError(VendorError):
    """Timeouts, refused or reset connections: no HTTP answer at all."""

    code = "ConnectionError"
    outcome = Outcome.RETRY
    # The request may have reached the server (read timeout, reset mid-exchange); False when it never left.
    ambiguous = True


_BY_STATUS: dict[int, type[VendorError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: TooLargeError,
    429: RateLimitedError,
}


def error_class_for(status: int) -> type[VendorError]:
    """The one mapping from an HTTP status to an error class."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequestError
    return UnexpectedStatusError


def outcome_of(error: BaseException) -> Outcome:
    """The one lookup from an error to what the flow does. Anything unexpected is retried."""
    return error.outcome if isinstance(error, RelayError) else Outcome.RETRY


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a `retry-after` header: delay-seconds, or an HTTP-date (RFC 9110 10.2.3); junk counts as absent."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": no zone is stated, so no instant is named
            return None
        seconds = when.timestamp() - now()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


ErrorFields = tuple[str | None, str | None, str | None, list[dict[str, Any]]]
# Each vendor client says how its error bodies read (code, message, target, details): shapes differ.
ErrorParser = Callable[[object], ErrorFields]


def generic_error_fields(body: object) -> ErrorFields:
    """The shape shared by most JSON APIs, `{"code", "message"}`; anything else reads as no fields."""
    if not isinstance(body, dict):
        return None, None, None, []
    return _str_or_none(body.get("code")), _str_or_none(body.get("message")), None, []


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with every bearer or basic credential, and each given secret value, replaced by [redacted]."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def redact_error(error: VendorError, secrets: Iterable[str] = ()) -> VendorError:
    """Redact every text a vendor error carries: a vendor may echo the request's Authorization header."""
    held = tuple(secrets)
    error.message = redact(error.message, held)
    error.code = redact(error.code, held)
    error.target = redact(error.target, held) if error.target else None
    error.body = redact(error.body, held) if error.body else None
    error.request_id = redact(error.request_id, held) if error.request_id else None
    error.details = [{k: redact(v, held) for k, v in d.items()} for d in error.details]
    error.args = (error.message,)
    return error


def safe_code(value: str | None) -> str | None:
    """A vendor's code as a tag can hold it: short, and only characters S3 tags and logs take as they are."""
    if not value:
        return None
    return _CODE.sub("_", value)[:64] or None


def _parse_body(text: str) -> object:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def error_from_response(
    status: int,
    body: bytes | str | None,
    headers: Mapping[str, str] | None = None,
    fields: ErrorParser = generic_error_fields,
) -> VendorError:
    """Map an error response to a VendorError; a missing or malformed body still maps cleanly."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    code, message, target, details = fields(_parse_body(text))
    code = safe_code(code)
    # Details keep their string fields only: a nested object could carry anything, a credential included.
    details = [
        {k: v for k, v in d.items() if k in ("code", "message", "target") and isinstance(v, str)} for d in details
    ]
    cls = error_class_for(status)
    request_id = next((headers[h] for h in REQUEST_ID_HEADERS if headers.get(h)), None)
    if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
        request_id = None  # an id is a short token of plain characters; anything else is not kept
    return cls(
        message or f"HTTP {status} with no readable error body",
        http_status=status,
        code=code or cls.code,
        target=target,
        details=details,
        request_id=request_id,
        retry_after=parse_retry_after(headers.get("retry-after")),
        body=text[:2000] or None,
    )
