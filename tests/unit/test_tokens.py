"""Secret validation and token caching, with Secrets Manager from moto in-process."""

from __future__ import annotations

import json

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from moto import mock_aws

from relay.auth.secrets import PlatformSecret, SecretStore
from relay.auth.tokens import ClientCredentialsTokens, StoredTokens, oauth_error_fields
from relay.errors import ApsLoginRequiredError, ConfigurationError, TokenEndpointError
from relay.transport.requestor import Requestor
from relay.transport.retry import RetryPolicy
from tests.unit.fakes import FakeResponse, FakeSession

GOOD = {"client_id": "id", "client_secret": "s3cr3t-value", "token_url": "https://ims.example/connect/token"}


def parse(raw):
    return PlatformSecret.parse(
        raw, secret_id="relay/itwin", default_token_url="https://d/t", default_scope="itwin-platform"
    )


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({**GOOD, "client_id": ""}, "client_id"),
        ({k: v for k, v in GOOD.items() if k != "client_secret"}, "client_secret"),
        ({**GOOD, "client_id": 42}, "client_id"),
        ({**GOOD, "expires_at": "soon"}, "expires_at"),
        ({**GOOD, "expires_at": True}, "expires_at"),
        ({**GOOD, "token_url": "ims.example"}, "token_url"),
    ],
)
def test_malformed_secret_names_the_field_never_the_value(raw, field):
    with pytest.raises(ConfigurationError) as info:
        parse(raw)
    assert field in str(info.value)
    assert "relay/itwin" in str(info.value)
    assert "s3cr3t-value" not in str(info.value)


def test_secret_not_an_object():
    with pytest.raises(ConfigurationError, match="JSON object"):
        parse(["x"])


def test_defaults_and_repr_hide_secrets():
    secret = parse({**GOOD, "token_url": None, "access_token": "at-123", "refresh_token": "rt-456"})
    assert secret.token_url == "https://d/t"
    assert secret.scope == "itwin-platform"
    text = repr(secret)
    assert "s3cr3t-value" not in text
    assert "at-123" not in text
    assert "rt-456" not in text


@pytest.fixture
def secrets(aws_env):
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        yield client


def store_for(client, value, name="relay/itwin"):
    client.create_secret(Name=name, SecretString=value if isinstance(value, str) else json.dumps(value))
    return SecretStore(
        name,
        default_token_url="https://d/t",
        default_scope="itwin-platform",
        provider=SecretsProvider(boto3_client=client),
    )


def test_invalid_json_secret_is_a_configuration_error(secrets):
    store = store_for(secrets, "{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        store.get()


def test_missing_secret_is_a_configuration_error(secrets):
    store = SecretStore(
        "nope", default_token_url="x", default_scope="y", provider=SecretsProvider(boto3_client=secrets)
    )
    with pytest.raises(ConfigurationError, match="'nope' could not be read"):
        store.get()


def endpoint(script, sleeps=None):
    """The token endpoint's requestor over a scripted session (constructor injection, no patching)."""
    return Requestor(
        "https://ims.example/connect/token",
        tokens=None,
        session=FakeSession(script),  # type: ignore[arg-type]
        policy=RetryPolicy(jitter=lambda d: d),
        sleep=(sleeps if sleeps is not None else []).append,
        error_fields=oauth_error_fields,
    )


def minted(n, expires_in=3600):
    return FakeResponse(200, {"access_token": f"minted-{n}", "expires_in": expires_in})


def test_fresh_stored_token_is_used_without_minting(secrets):
    store = store_for(secrets, {**GOOD, "access_token": "stored", "expires_at": 10_000})
    tokens = ClientCredentialsTokens(store, endpoint([]), clock=lambda: 1_000)
    assert tokens.token() == "stored"


def test_minted_token_is_cached_until_shortly_before_expiry(secrets):
    store = store_for(secrets, GOOD)
    now = [1_000.0]
    ep = endpoint([minted(1), minted(2), minted(3)])
    tokens = ClientCredentialsTokens(store, ep, clock=lambda: now[0])
    assert tokens.token() == "minted-1"
    now[0] += 3000
    assert tokens.token() == "minted-1"
    now[0] += 500  # inside the refresh skew
    assert tokens.token() == "minted-2"
    tokens.invalidate()
    assert tokens.token() == "minted-3"
    form = ep.session.sent[0][2]["data"]  # type: ignore[attr-defined]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "itwin-platform"


def test_minting_retries_a_connect_timeout_through_the_retry_policy(secrets):
    import requests

    sleeps: list[float] = []
    ep = endpoint([requests.ConnectTimeout("no route"), FakeResponse(503), minted(1)], sleeps)
    tokens = ClientCredentialsTokens(store_for(secrets, GOOD), ep)
    assert tokens.token() == "minted-1"
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (FakeResponse(400, {"error": "invalid_client", "error_description": "bad s3cr3t-value"}), "invalid_client"),
        (FakeResponse(401, b"<html>no</html>"), "Unauthorized"),
        (FakeResponse(200, b"<html>not json</html>"), "TokenEndpointError"),
        (FakeResponse(200, {"token_type": "Bearer"}), "TokenEndpointError"),
    ],
)
def test_token_endpoint_refusals_are_retryable_configuration_failures(secrets, answer, code):
    tokens = ClientCredentialsTokens(store_for(secrets, GOOD), endpoint([answer]))
    with pytest.raises(TokenEndpointError) as info:
        tokens.token()
    assert info.value.code == code
    assert info.value.outcome == "retry"  # never the file's fault, so never rejected
    assert "s3cr3t-value" not in str(info.value)


def test_stored_tokens_reread_then_explain(secrets):
    store = store_for(secrets, {**GOOD, "access_token": "old", "expires_at": 100}, name="relay/aps")
    tokens = StoredTokens(store, clock=lambda: 1_000)
    with pytest.raises(ApsLoginRequiredError, match="refresher") as info:
        tokens.token()
    assert info.value.outcome == "retry"  # failed only on an upload's last delivery
    secrets.put_secret_value(
        SecretId="relay/aps", SecretString=json.dumps({**GOOD, "access_token": "new", "expires_at": 99_999})
    )
    assert tokens.token() == "new"  # expired in cache → forced re-read finds the refreshed one


@pytest.mark.parametrize(
    "token_url",
    ["http://ims.example/connect/token", "https://evil.example/token", "https://ims.example:8443/connect/token"],
)
def test_the_client_secret_goes_only_to_a_trusted_token_origin(secrets, token_url):
    ep = endpoint([minted(1)])
    tokens = ClientCredentialsTokens(store_for(secrets, {**GOOD, "token_url": token_url}), ep)
    with pytest.raises(ConfigurationError, match="RELAY_ALLOWED_TOKEN_HOSTS") as info:
        tokens.token()
    assert "token_url" in str(info.value)
    assert ep.session.sent == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("listed", "token_url", "local"),
    [
        ("login.example:8443", "https://login.example:8443/token", False),
        ("http://127.0.0.1:8900", "http://127.0.0.1:8900/connect/token", True),  # the local stack's sandbox
    ],
)
def test_a_listed_token_host_is_trusted(secrets, listed, token_url, local):
    ep = Requestor(
        "https://ims.example/connect/token",
        tokens=None,
        token_hosts=[listed],
        session=FakeSession([minted(1)]),  # type: ignore[arg-type]
        local=local,
    )
    store = store_for(secrets, {**GOOD, "token_url": token_url})
    assert ClientCredentialsTokens(store, ep).token() == "minted-1"


def test_a_plain_http_token_host_is_refused_on_aws():
    from relay.errors import UnsafeLocationError

    with pytest.raises(UnsafeLocationError, match="beside the https API base"):
        Requestor("https://ims.example/connect/token", tokens=None, token_hosts=["http://login.example"])


def test_an_endpoint_that_echoes_the_secret_in_its_code_is_redacted(secrets):
    echo = FakeResponse(400, {"error": "s3cr3t-value", "error_description": "s3cr3t-value"})
    with pytest.raises(TokenEndpointError) as info:
        ClientCredentialsTokens(store_for(secrets, GOOD), endpoint([echo])).token()
    assert "s3cr3t-value" not in str(info.value)
    assert "s3cr3t-value" not in info.value.code


def test_minting_retries_never_outlive_the_invocation(secrets):
    from relay.transport.retry import Deadline

    sleeps: list[float] = []
    ep = endpoint([FakeResponse(503)] * 5, sleeps)
    tokens = ClientCredentialsTokens(store_for(secrets, GOOD), ep)
    tokens.use_deadline(Deadline(lambda: 3000))  # 3 s left, less than the 5 s margin
    with pytest.raises(TokenEndpointError):
        tokens.token()
    assert sleeps == []
    assert len(ep.session.sent) == 1  # type: ignore[attr-defined]


def test_token_errors_name_the_origin_the_post_went_to(secrets):
    ep = Requestor(
        "https://ims.example/connect/token",
        tokens=None,
        token_hosts=["login.local.example"],
        session=FakeSession([FakeResponse(400, {"error": "invalid_client"})]),  # type: ignore[arg-type]
    )
    store = store_for(secrets, {**GOOD, "token_url": "https://login.local.example/token"})
    with pytest.raises(TokenEndpointError, match=r"login\.local\.example"):
        ClientCredentialsTokens(store, ep).token()


@pytest.mark.parametrize("field", ["client_secret", "access_token", "refresh_token"])
def test_secret_values_with_whitespace_are_refused_by_name(field):
    with pytest.raises(ConfigurationError, match=field) as info:
        parse({**GOOD, field: "value-pasted-with-a-newline\n"})
    assert "value-pasted" not in str(info.value)
