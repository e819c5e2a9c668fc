"""Origins of hostile and ordinary URLs: parsed once, with the parser that sends, and refused when ambiguous."""

from __future__ import annotations

import pytest

from relay.errors import UnsafeLocationError
from relay.transport.requestor import Requestor
from relay.transport.urls import Origin, is_absolute, origin_of, trusted_origins

API = "https://api.bentley.com"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://api.bentley.com/issues/1", Origin("https", "api.bentley.com", 443)),
        ("https://API.Bentley.com:443/issues/1", Origin("https", "api.bentley.com", 443)),
        ("https://api.bentley.com:/issues/1", Origin("https", "api.bentley.com", 443)),
        ("http://127.0.0.1:8900/x", Origin("http", "127.0.0.1", 8900)),
        ("http://[::1]:8900/x", Origin("http", "[::1]", 8900)),
        ("https://xn--bcher-kva.example/x", Origin("https", "xn--bcher-kva.example", 443)),
    ],
)
def test_ordinary_urls(url, origin):
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9\\@api.bentley.com/issues/1", "backslash"),
        ("https://user:pw@api.bentley.com/x", "user information"),
        ("https://api.bentley.com@127.0.0.1/x", "user information"),
        ("https://@api.bentley.com/x", "user information"),
        ("https://bücher.example/x", "non-ASCII"),
        ("https://api%2ebentley.com/x", "percent-encoded"),
        ("https://api.bentley.com./x", "ends with a dot"),
        ("https://api.bentley.com:0/x", "out of range"),
        ("https://api.bentley.com:99999/x", "does not parse"),
        ("https://api.bentley.com:44x/x", "does not parse"),
        ("ftp://api.bentley.com/x", "only lower-case http"),
        ("HTTP://api.bentley.com/x", "only lower-case http"),
        ("//api.bentley.com/x", "only lower-case http"),
        ("https://api.bentley.com /x", "whitespace"),
        ("https://api.bentley.com\t/x", "whitespace"),
        ("https:///x", "host is empty"),
        ("https://[::1/x", "does not parse"),
    ],
)
def test_hostile_urls_are_refused_with_a_reason(url, why):
    with pytest.raises(UnsafeLocationError, match=why):
        origin_of(url)


def test_query_strings_and_passwords_never_reach_the_error():
    with pytest.raises(UnsafeLocationError) as info:
        origin_of("https://u:pw-SECRET@evil.example/x?signature=SECRET")
    assert "SECRET" not in str(info.value)
    assert "evil.example" in str(info.value)


def test_a_plain_http_upload_host_beside_an_https_api_is_refused():
    with pytest.raises(UnsafeLocationError, match="beside the https API base"):
        trusted_origins(API, ["http://files.example"])


@pytest.mark.parametrize(
    ("location", "trusted"),
    [
        ("https://api.bentley.com/issues/1/attachments/a", True),
        ("https://api.bentley.com:443/issues/1/attachments/a", True),
        ("http://api.bentley.com/issues/1/attachments/a", False),  # the token in clear text
        ("https://api.bentley.com:8443/issues/1/attachments/a", False),
        ("https://files.bentley.com/blob", True),  # listed
        ("https://evil.example/blob", False),
    ],
)
def test_token_goes_only_to_the_configured_scheme_host_and_port(location, trusted):
    requestor = Requestor(API, tokens=None, token_hosts=["files.bentley.com"])
    if trusted:
        requestor.check_trusted(location)
    else:
        with pytest.raises(UnsafeLocationError):
            requestor.check_trusted(location)


def test_a_local_http_base_trusts_http_on_its_own_port_only():
    origins = trusted_origins("http://127.0.0.1:8900", ["cdn.local:9000", "https://secure.example"])
    assert origins == {
        Origin("http", "127.0.0.1", 8900),
        Origin("http", "cdn.local", 9000),
        Origin("https", "secure.example", 443),
    }


@pytest.mark.parametrize(
    ("value", "absolute"),
    [("/issues/1", False), ("issues/1", False), ("https://x/y", True), ("ftp://x", True), ("//x/y", True)],
)
def test_paths_and_urls(value, absolute):
    assert is_absolute(value) is absolute
