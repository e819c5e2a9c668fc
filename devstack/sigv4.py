"""SigV4 for the local stack: sign `requests` calls, and check signed requests as API Gateway does, with botocore."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP = "%Y%m%dT%H%M%SZ"
MAX_SKEW = timedelta(minutes=5)

SignatureKind = Literal["missing", "invalid", "expired"]

MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY = "The security token included in the request is invalid."
_ERROR_TYPES: dict[str, str] = {
    "missing": "MissingAuthenticationTokenException",
    "invalid": "InvalidSignatureException",
    "expired": "InvalidSignatureException",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class SignatureError(Exception):
    """Why a request is not authenticated: `kind` says which, `error_type` is API Gateway's x-amzn-ErrorType."""

    def __init__(self, kind: SignatureKind, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.kind: SignatureKind = kind
        self.message = message
        self.error_type = error_type or _ERROR_TYPES[kind]


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The query's decoded (name, value) pairs in order; `+` is a space, as API Gateway reads a query."""
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def host_of(url: str) -> str:
    """The Host header an HTTP client sends for `url` (no user info; no port when it is the scheme's default)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    default = {"http": ":80", "https": ":443"}.get(parts.scheme.lower())
    return host.removesuffix(default) if default else host


class _ExactSigner(SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """botocore's SigV4 over exactly the given headers.

    botocore's own `headers_to_sign` takes every header of the request but a few it never signs
    (User-Agent, Connection, ...): a verifier must use the client's SignedHeaders list instead, and a
    client should sign only headers no proxy or HTTP library rewrites.
    """

    def __init__(self, credentials: Credentials, service: str, region: str, signed: list[tuple[str, str]]) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in self._signed:
            headers[name.lower()] = value  # HTTPHeaders appends: a repeated header keeps all its values
        return headers


def _signature(
    method: str,
    url: str,
    signed: list[tuple[str, str]],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str,
    timestamp: str,
) -> tuple[str, str, str]:
    """(signature, canonical request, string to sign) of a request, all computed by botocore."""
    parts = urlsplit(url)
    # botocore copies a query from the URL as it is; given as params, each name and value is encoded
    # the SigV4 way (RFC 3986, %20 for a space), which is how the receiving side rebuilds it.
    request = AWSRequest(
        method=method.upper(),
        url=urlunsplit((parts.scheme or "http", parts.netloc, parts.path or "/", "", "")),
        data=body,
        params=query_pairs(parts.query),
    )
    request.context["timestamp"] = timestamp
    signer = _ExactSigner(credentials, service, region, signed)
    canonical: str = signer.canonical_request(request)
    string_to_sign: str = signer.string_to_sign(request, canonical)
    signature: str = signer.signature(string_to_sign, request)
    return signature, canonical, string_to_sign


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("iso-8859-1")  # what http.client sends for a str body
    if hasattr(body, "read") and hasattr(body, "seek"):
        position = body.tell()
        data = body.read()
        body.seek(position)
        return data if isinstance(data, bytes) else str(data).encode("iso-8859-1")
    raise TypeError(f"SigV4 signs a body of bytes, str or a seekable file, not {type(body).__name__}")


class SigV4(requests.auth.AuthBase):
    """Sign a `requests` call with SigV4: `requests.get(url, auth=SigV4())` (the local stack's keys by default).

    Signs host, x-amz-date, the security token when there is one, content-type and any other x-amz-*
    header, plus the query and the body's SHA-256: the headers awscurl signs, never ones an HTTP
    library or proxy may rewrite.
    """

    def __init__(
        self,
        access_key: str = "testing",
        secret_key: str = "testing",  # noqa: S107 - the local stack's key, valid nowhere else
        region: str = "us-east-1",
        service: str = "execute-api",
        *,
        token: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.credentials = Credentials(access_key, secret_key, token)
        self.region = region
        self.service = service
        self.clock = clock or (lambda: datetime.now(UTC))

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = r.url or ""
        method = r.method or "GET"
        timestamp = self.clock().astimezone(UTC).strftime(TIMESTAMP)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            r.headers.pop(name, None)  # a retry or a redirect signs again
        r.headers["X-Amz-Date"] = timestamp
        if self.credentials.token:
            r.headers["X-Amz-Security-Token"] = self.credentials.token
        signed = [("host", r.headers.get("Host") or host_of(url))]
        for name, value in r.headers.items():
            lower = name.lower()
            if lower == "content-type" or (lower.startswith("x-amz-") and lower != "x-amz-client-context"):
                signed.append((lower, value))
        signed.sort()
        signature, _, _ = _signature(
            method, url, signed, _body_bytes(r.body), self.credentials, self.region, self.service, timestamp
        )
        scope = f"{self.credentials.access_key}/{timestamp[:8]}/{self.region}/{self.service}/aws4_request"
        names = ";".join(sorted({name for name, _ in signed}))
        r.headers["Authorization"] = f"{ALGORITHM} Credential={scope}, SignedHeaders={names}, Signature={signature}"
        return r


def _authorization_fields(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("invalid", f"Unsupported Authorization type: only {ALGORITHM} is accepted.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, equals, field = item.strip().partition("=")
        if not equals:
            raise SignatureError(
                "invalid", f"Invalid key=value pair (missing equal-sign) in Authorization header: {key!r}."
            )
        fields[key] = field
    missing = [
        f"Authorization header requires '{k}' parameter."
        for k in ("Credential", "SignedHeaders", "Signature")
        if not fields.get(k)
    ]
    if missing:
        raise SignatureError("invalid", " ".join(missing))
    return fields


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    secrets: Mapping[str, str],
    region: str,
    service: str = "execute-api",
    now: datetime | None = None,
    max_skew: timedelta = MAX_SKEW,
) -> str:
    """The access key id that signed the request, or SignatureError saying why it is not authenticated.

    `headers` may repeat a name (give pairs then); `url` is the URL as requested (its path and query as
    received); `secrets` maps access key ids to secret keys. The signature is recomputed by botocore over
    the headers named in SignedHeaders, at the request's X-Amz-Date, and compared in constant time.
    """
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    received: dict[str, list[str]] = {}
    for name, value in pairs:
        received.setdefault(name.lower(), []).append(value)
    authorizations = received.get("authorization", [])
    if not authorizations:
        raise SignatureError("missing", "Missing Authentication Token")
    if len(authorizations) > 1:
        raise SignatureError("invalid", "The request has more than one Authorization header.")
    fields = _authorization_fields(authorizations[0])

    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not scope[0]:
        raise SignatureError(
            "invalid",
            f"Credential should be <access key>/<date>/<region>/<service>/aws4_request, not {fields['Credential']!r}.",
        )
    access_key, scope_date, scope_region, scope_service, _ = scope
    secret = secrets.get(access_key)
    if secret is None:
        raise SignatureError("invalid", UNKNOWN_KEY, "UnrecognizedClientException")
    if scope_region != region:
        raise SignatureError("invalid", f"Credential should be scoped to a valid region, not '{scope_region}'.")
    if scope_service != service:
        raise SignatureError("invalid", f"Credential should be scoped to correct service: '{service}'.")

    dates = received.get("x-amz-date", [])
    if len(dates) != 1:
        raise SignatureError("invalid", "Authorization header requires existence of one 'X-Amz-Date' header.")
    timestamp = dates[0].strip()
    try:
        signed_at = datetime.strptime(timestamp, TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("invalid", f"X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z', not {timestamp!r}.") from None
    if scope_date != timestamp[:8]:
        raise SignatureError(
            "invalid",
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{scope_date}' != '{timestamp[:8]}', from '{timestamp}'.",
        )
    current = (now or datetime.now(UTC)).astimezone(UTC)
    minutes = f"{max_skew.total_seconds() / 60:g} min."
    if signed_at < current - max_skew:
        raise SignatureError(
            "expired",
            f"Signature expired: {timestamp} is now earlier than {(current - max_skew).strftime(TIMESTAMP)} "
            f"({current.strftime(TIMESTAMP)} - {minutes})",
        )
    if signed_at > current + max_skew:
        raise SignatureError(
            "expired",
            f"Signature not yet current: {timestamp} is still later than {(current + max_skew).strftime(TIMESTAMP)} "
            f"({current.strftime(TIMESTAMP)} + {minutes})",
        )

    names = fields["SignedHeaders"].split(";")
    if any(not n or n != n.lower() for n in names):
        raise SignatureError(
            "invalid", f"SignedHeaders must be lowercase names separated by ';': {fields['SignedHeaders']!r}."
        )
    if "host" not in names:
        raise SignatureError("invalid", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    if "x-amz-security-token" in received and "x-amz-security-token" not in names:
        # Unsigned, the token could be swapped in transit; AWS refuses it the same way.
        raise SignatureError("invalid", "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.")
    signed: list[tuple[str, str]] = []
    for name in dict.fromkeys(names):
        values = received.get(name)
        if name == "host" and not values:
            values = [host_of(url)]  # a prepared request gets its Host header only when it is sent
        if not values:
            raise SignatureError("invalid", f"The header '{name}' is signed but not in the request.")
        signed.extend((name, v) for v in values)
    digest = hashlib.sha256(body).hexdigest()
    # x-amz-content-sha256 would stand in for the body's hash in the canonical request: it must be that hash.
    claimed = received.get("x-amz-content-sha256", [])
    if claimed and [c.strip().lower() for c in claimed] != [digest]:
        raise SignatureError("invalid", "The provided 'x-amz-content-sha256' header does not match what was computed.")

    provided = fields["Signature"].strip()
    expected, canonical, string_to_sign = _signature(
        method, url, signed, body, Credentials(access_key, secret), region, service, timestamp
    )
    if not _HEX64.fullmatch(provided) or not hmac.compare_digest(expected.encode(), provided.encode()):
        raise SignatureError(
            "invalid",
            f"{MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
            f"The String-to-Sign should have been\n'{string_to_sign}'\n",
        )
    return access_key
