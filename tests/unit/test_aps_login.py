"""The sign-in command's decisions: PKCE, the authorize URL, the redirect URI, the callback's state and error."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from relay.auth.login import LoginResult, authorize_url, check_callback, loopback, pkce_pair, summary
from relay.errors import ConfigurationError, ConsentDeniedError, LoginError, StateMismatchError


def test_pkce_verifier_is_unreserved_43_to_128_and_the_challenge_is_its_s256():
    verifier, challenge = pkce_pair()
    assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier)
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected
    assert "=" not in challenge
    assert pkce_pair()[0] != verifier  # random each time


def test_authorize_url_carries_every_parameter():
    base = "https://developer.api.autodesk.com/"
    url = authorize_url(base, "cid", "http://localhost:8765/callback", "data:read data:write", "st", "ch")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://developer.api.autodesk.com/authentication/v2/authorize"
    )
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "response_type": "code",
        "client_id": "cid",
        "redirect_uri": "http://localhost:8765/callback",
        "scope": "data:read data:write",
        "state": "st",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
    }


@pytest.mark.parametrize(
    ("uri", "host", "port", "path"),
    [
        ("http://localhost:8765/callback", "127.0.0.1", 8765, "/callback"),
        ("http://127.0.0.1:9000/cb", "127.0.0.1", 9000, "/cb"),
        ("http://[::1]:8765/", "::1", 8765, "/"),
        ("http://localhost/callback", "127.0.0.1", 80, "/callback"),
    ],
)
def test_loopback_redirect_uris(uri, host, port, path):
    where = loopback(uri)
    assert (where.host, where.port, where.path) == (host, port, path)


@pytest.mark.parametrize(
    "uri",
    ["https://localhost:8765/callback", "http://example.com:8765/callback", "http://localhost:99999/x", "localhost"],
)
def test_a_redirect_uri_off_this_machine_is_refused(uri):
    with pytest.raises(ConfigurationError, match="redirect URI"):
        loopback(uri)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"code": "c", "state": "other"}, StateMismatchError),
        ({"code": "c"}, StateMismatchError),
        ({"error": "access_denied", "state": "other"}, StateMismatchError),  # a forged callback is believed in nothing
        ({"error": "access_denied", "state": "s"}, ConsentDeniedError),
        ({"error": "server_error", "state": "s"}, LoginError),
        ({"state": "s"}, LoginError),
    ],
)
def test_callback_checks(query, error):
    with pytest.raises(error) as info:
        check_callback(query, "s")
    assert "nothing was written" in str(info.value)


def test_callback_codes_are_named():
    with pytest.raises(StateMismatchError) as mismatch:
        check_callback({"state": "x"}, "s")
    with pytest.raises(ConsentDeniedError) as denied:
        check_callback({"error": "access_denied", "state": "s"}, "s")
    assert (mismatch.value.code, denied.value.code) == ("StateMismatch", "ConsentDenied")


def test_a_good_callback_gives_the_code():
    assert check_callback({"code": "the-code", "state": "s"}, "s") == "the-code"


def test_summary_names_user_scopes_and_expiry_but_no_token():
    text = summary(LoginResult("Ann <ann@x>", "data:read", 7200.0, 3600.0, "v1"), "stack/aps", 3600.0)
    assert "Ann <ann@x>" in text
    assert "data:read" in text
    assert "1970-01-01 02:00:00 UTC (in 60 min)" in text
    assert "stack/aps" in text


def test_the_cli_lists_aps_login(capsys):
    from relay.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "aps-login" in capsys.readouterr().out


def test_the_cli_without_a_secret_id_is_a_named_error(capsys, monkeypatch):
    from relay.cli import main

    monkeypatch.delenv("RELAY_APS_SECRET_ID", raising=False)
    assert main(["aps-login", "--secret-id", ""]) == 1
    assert "ConfigurationError" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url",
    ["http://localhost.attacker.example/userinfo", "http://127.0.0.1.nip.io/userinfo", "ftp://127.0.0.1/userinfo"],
)
def test_the_user_token_never_goes_to_a_host_that_only_looks_local(url: str) -> None:
    from relay.auth.login import who

    class Session:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def get(self, url: str, **_: object) -> None:
            self.calls.append(url)

    session = Session()
    assert who(url, "user-token", session) is None  # type: ignore[arg-type]
    assert session.calls == []
