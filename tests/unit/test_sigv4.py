"""SigV4 without a socket: what devstack.sigv4 and botocore sign verifies, and every tampering fails with its kind."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import botocore.auth
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.sigv4 import SignatureError, SigV4, verify

SIGNED_AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
SECRETS = {"testing": "testing", "AKIDOTHER": "other-secret"}
BASE = "http://127.0.0.1:3000/v1"


@dataclass
class Signed:
    """A request as it goes on the wire: what `verify` is given."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, **options: Any) -> str:
        args: dict[str, Any] = {"secrets": SECRETS, "region": "us-east-1", "now": SIGNED_AT, **options}
        return verify(self.method, self.url, self.headers, self.body, **args)


def signed(
    method: str = "POST",
    url: str = f"{BASE}/forms/F-1/attachments?b=2&a=1",
    body: bytes = b'{"caption": "north wall"}',
    headers: dict[str, str] | None = None,
    **auth: Any,
) -> Signed:
    """Signed by devstack.sigv4.SigV4 at SIGNED_AT."""
    options: dict[str, Any] = {"clock": lambda: SIGNED_AT, **auth}
    prepared = requests.Request(
        method,
        url,
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        auth=SigV4(**options),
    ).prepare()
    assert prepared.url is not None
    raw = prepared.body if isinstance(prepared.body, bytes) else str(prepared.body or "").encode()
    return Signed(method, prepared.url, dict(prepared.headers), raw)


def by_botocore(
    method: str, url: str, body: bytes, headers: dict[str, str], credentials: Credentials | None = None
) -> Signed:
    """Signed by botocore's SigV4Auth itself, on an AWSRequest: an independent signer."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(credentials or Credentials("testing", "testing"), "execute-api", "us-east-1").add_auth(request)
    return Signed(method, url, dict(request.headers.items()), body)


@pytest.fixture(autouse=True)
def _botocore_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore signs at SIGNED_AT too, so no test depends on the wall clock."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: SIGNED_AT.replace(tzinfo=None))


def with_header(request: Signed, name: str, value: str) -> Signed:
    headers = {k: v for k, v in request.headers.items() if k.lower() != name.lower()}
    return Signed(request.method, request.url, {**headers, name: value}, request.body)


def with_authorization(request: Signed, old: str, new: str) -> Signed:
    assert old in request.headers["Authorization"]
    return with_header(request, "Authorization", request.headers["Authorization"].replace(old, new))


def test_a_signed_request_verifies_and_names_its_access_key():
    assert signed().check() == "testing"
    assert signed(access_key="AKIDOTHER", secret_key="other-secret").check() == "AKIDOTHER"


def test_the_signer_signs_only_headers_no_http_library_rewrites():
    request = signed(headers={"X-Amz-Meta-Note": "n", "User-Agent": "ua", "Accept": "*/*"})
    names = request.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert names == "content-type;host;x-amz-date;x-amz-meta-note"
    # Unsigned headers may change on the way without breaking it.
    assert with_header(with_header(request, "User-Agent", "proxy"), "Accept", "x").check() == "testing"


TAMPERINGS: list[tuple[str, Any, str]] = [
    ("method", lambda r: Signed("PUT", r.url, r.headers, r.body), "invalid"),
    ("path", lambda r: Signed(r.method, r.url.replace("F-1", "F-2"), r.headers, r.body), "invalid"),
    ("stage", lambda r: Signed(r.method, r.url.replace("/v1/", "/v2/"), r.headers, r.body), "invalid"),
    ("query value", lambda r: Signed(r.method, r.url.replace("a=1", "a=9"), r.headers, r.body), "invalid"),
    ("query added", lambda r: Signed(r.method, r.url + "&c=3", r.headers, r.body), "invalid"),
    ("query dropped", lambda r: Signed(r.method, r.url.split("?")[0], r.headers, r.body), "invalid"),
    ("signed header", lambda r: with_header(r, "Content-Type", "text/plain"), "invalid"),
    ("host", lambda r: with_header(r, "Host", "127.0.0.1:3001"), "invalid"),
    ("body", lambda r: Signed(r.method, r.url, r.headers, r.body + b" "), "invalid"),
    ("date by a second", lambda r: with_header(r, "X-Amz-Date", "20240506T070810Z"), "invalid"),
    ("date by an hour", lambda r: with_header(r, "X-Amz-Date", "20240506T080809Z"), "expired"),
    ("date in scope", lambda r: with_authorization(r, "/20240506/", "/20240507/"), "invalid"),
    ("region", lambda r: with_authorization(r, "/us-east-1/", "/eu-west-1/"), "invalid"),
    ("service", lambda r: with_authorization(r, "/execute-api/", "/s3/"), "invalid"),
    ("access key", lambda r: with_authorization(r, "Credential=testing/", "Credential=AKIDOTHER/"), "invalid"),
    ("unknown access key", lambda r: with_authorization(r, "Credential=testing/", "Credential=AKIDNOPE/"), "invalid"),
    ("signature", lambda r: with_authorization(r, "Signature=", "Signature=0"), "invalid"),
    ("signed headers", lambda r: with_authorization(r, "content-type;", ""), "invalid"),
    ("no authorization", lambda r: Signed(r.method, r.url, {"X-Amz-Date": r.headers["X-Amz-Date"]}, r.body), "missing"),
]


@pytest.mark.parametrize(("change", "kind"), [(t[1], t[2]) for t in TAMPERINGS], ids=[t[0] for t in TAMPERINGS])
def test_every_tampering_fails_with_its_kind(change, kind):
    request = signed()
    with pytest.raises(SignatureError) as failure:
        change(request).check()
    assert failure.value.kind == kind


@pytest.mark.parametrize(
    ("options", "kind", "error_type", "message"),
    [
        ({"secret_key": "not-it"}, "invalid", "InvalidSignatureException", "The request signature we calculated"),
        ({"access_key": "AKIDNOPE"}, "invalid", "UnrecognizedClientException", "The security token included"),
        (
            {"region": "eu-west-1"},
            "invalid",
            "InvalidSignatureException",
            "Credential should be scoped to a valid region",
        ),
        ({"service": "s3"}, "invalid", "InvalidSignatureException", "Credential should be scoped to correct service"),
        (
            {"clock": lambda: SIGNED_AT - timedelta(minutes=6)},
            "expired",
            "InvalidSignatureException",
            "Signature expired: 20240506T070209Z is now earlier than 20240506T070309Z",
        ),
        (
            {"clock": lambda: SIGNED_AT + timedelta(minutes=6)},
            "expired",
            "InvalidSignatureException",
            "Signature not yet current: 20240506T071409Z is still later than",
        ),
    ],
    ids=["secret", "access-key", "region", "service", "past", "future"],
)
def test_signing_wrongly_fails_as_api_gateway_answers(options, kind, error_type, message):
    with pytest.raises(SignatureError) as failure:
        signed(**options).check()
    assert (failure.value.kind, failure.value.error_type) == (kind, error_type)
    assert failure.value.message.startswith(message)


def test_the_skew_is_five_minutes_either_way_unless_told():
    request = signed()
    assert request.check(now=SIGNED_AT + timedelta(minutes=5)) == "testing"
    assert request.check(now=SIGNED_AT - timedelta(minutes=5)) == "testing"
    with pytest.raises(SignatureError, match="Signature expired"):
        request.check(now=SIGNED_AT + timedelta(minutes=5, seconds=1))
    assert request.check(now=SIGNED_AT + timedelta(hours=1), max_skew=timedelta(hours=2)) == "testing"


def test_the_verifier_checks_its_own_region_and_service():
    with pytest.raises(SignatureError, match="valid region, not 'us-east-1'"):
        signed().check(region="eu-west-1")
    with pytest.raises(SignatureError, match="correct service: 'lambda'"):
        signed().check(service="lambda")


def test_the_mismatch_message_shows_the_canonical_request_but_no_secret():
    with pytest.raises(SignatureError) as failure:
        signed(secret_key="not-it").check()
    message = failure.value.message
    assert (
        "The Canonical String for this request should have been\n'POST\n/v1/forms/F-1/attachments\na=1&b=2\n" in message
    )
    assert "The String-to-Sign should have been\n'AWS4-HMAC-SHA256\n20240506T070809Z\n" in message
    assert "not-it" not in message


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer abc",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=testing/20240506/us-east-1/execute-api/aws4_request",
        "AWS4-HMAC-SHA256 Credential=testing/20240506/us-east-1/execute-api/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=testing/us-east-1/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=testing/20240506/us-east-1/execute-api/aws4_request SignedHeaders=host",
        "AWS4-HMAC-SHA1 Credential=testing/20240506/us-east-1/execute-api/aws4_request, "
        "SignedHeaders=host, Signature=0",
    ],
)
def test_a_malformed_authorization_is_invalid(authorization):
    with pytest.raises(SignatureError) as failure:
        with_header(signed(), "Authorization", authorization).check()
    assert failure.value.kind == "invalid"
    assert failure.value.error_type == "InvalidSignatureException"


def test_host_must_be_signed_and_signed_headers_must_be_sent():
    request = signed()
    scope = request.headers["Authorization"].split(",")[0]
    no_host = f"{scope}, SignedHeaders=content-type;x-amz-date, Signature={'0' * 64}"
    with pytest.raises(SignatureError, match="'Host' must be a 'SignedHeader'"):
        with_header(request, "Authorization", no_host).check()
    without = {k: v for k, v in request.headers.items() if k != "Content-Type"}
    with pytest.raises(SignatureError, match="'content-type' is signed but not in the request"):
        Signed(request.method, request.url, without, request.body).check()
    no_date = {k: v for k, v in request.headers.items() if k != "X-Amz-Date"}
    with pytest.raises(SignatureError, match="X-Amz-Date"):
        Signed(request.method, request.url, no_date, request.body).check()


def test_a_security_token_verifies_when_it_is_signed():
    request = signed(token="session-token")
    assert request.headers["X-Amz-Security-Token"] == "session-token"
    assert "x-amz-security-token" in request.headers["Authorization"]
    assert request.check() == "testing"
    with pytest.raises(SignatureError):
        with_header(request, "X-Amz-Security-Token", "another").check()
    unsigned = with_header(signed(), "X-Amz-Security-Token", "smuggled")
    with pytest.raises(SignatureError, match="'X-Amz-Security-Token' must be a 'SignedHeader'") as failure:
        unsigned.check()
    assert failure.value.kind == "invalid"


def test_a_request_botocore_signs_itself_verifies():
    body = b"\x00\xffbinary"
    url = f"{BASE}/forms/F%201/attachments?%24top=5&name=a%20b&name=%C3%BC"
    request = by_botocore("PUT", url, body, {"Host": "127.0.0.1:3000", "Content-Type": "application/octet-stream"})
    assert request.check() == "testing"
    # What the HTTP client adds after signing is not signed, and does not matter.
    assert with_header(request, "User-Agent", "curl/8").check() == "testing"
    with pytest.raises(SignatureError):
        Signed("PUT", url, request.headers, body + b"!").check()


def test_an_awscurl_style_request_verifies():
    """awscurl signs host;x-amz-date[;x-amz-security-token] and may send x-amz-content-sha256."""
    body = b'{"a": 1}'
    digest = hashlib.sha256(body).hexdigest()
    url = f"{BASE}/forms/F-1/attachments"
    request = by_botocore(
        "POST",
        url,
        body,
        {"Host": "127.0.0.1:3000", "X-Amz-Content-SHA256": digest},
        Credentials("testing", "testing", "session-token"),
    )
    assert (
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token," in request.headers["Authorization"]
    )
    assert with_header(request, "Accept", "application/xml").check() == "testing"
    # The claimed payload hash must be the body's: it stands in for it in the canonical request.
    with pytest.raises(SignatureError, match="x-amz-content-sha256"):
        Signed("POST", url, request.headers, b'{"a": 2}').check()


def test_repeated_headers_are_signed_with_all_their_values():
    request = by_botocore("GET", f"{BASE}/x", b"", {"Host": "127.0.0.1:3000", "X-Amz-Meta-A": "1"})
    pairs = list(request.headers.items())
    assert verify("GET", request.url, pairs, b"", secrets=SECRETS, region="us-east-1", now=SIGNED_AT) == "testing"
    with pytest.raises(SignatureError):
        verify(
            "GET", request.url, [*pairs, ("X-Amz-Meta-A", "2")], b"", secrets=SECRETS, region="us-east-1", now=SIGNED_AT
        )


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}/forms/F-1/attachments?$filter=name eq 'a b'&$top=5",
        f"{BASE}/forms/F-1/attachments?q=a+b&q=a%2Bb&empty=&flag",
        f"{BASE}/forms/ü ß/attachments?name=ü&emoji=📎",
        f"{BASE}/forms/F%2F1/attachments?x=%25",
        f"{BASE}/files/a/./b/../c//d",
    ],
    ids=["dollar-and-spaces", "plus-and-blanks", "unicode", "percent-encoded", "dot-segments"],
)
def test_queries_and_paths_as_clients_write_them_verify(url):
    request = signed("GET", url, b"")
    assert request.check() == "testing"


@settings(max_examples=150, deadline=None)
@given(
    # Hypothesis' text has no lone surrogates: every string here has a UTF-8 form, as a URL's text must.
    segments=st.lists(st.text(min_size=1, max_size=12), max_size=4),
    query=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4),
    body=st.binary(max_size=64),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_any_path_query_and_body_round_trips_and_botocore_agrees(segments, query, body, method):
    path = "/v1/" + "/".join(quote(s, safe="") for s in segments)
    url = f"http://127.0.0.1:3000{path}"
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query if k)
    full = f"{url}?{encoded}" if encoded else url
    mine = signed(method, full, body)
    assert mine.check() == "testing"
    # botocore copies the query it is given: one encoded the SigV4 way (%20, not +) is already canonical.
    theirs = by_botocore(method, full, body, {"Host": "127.0.0.1:3000"})
    assert theirs.check() == "testing"
    with pytest.raises(SignatureError):
        Signed(method, full, mine.headers, body + b"x").check()
