"""The refresher's decisions, its lease in moto's DynamoDB (laid out from template.yaml), and one run each way."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from moto import mock_aws

from relay.auth.secrets import PlatformSecret, SecretStore
from relay.auth.tokens import oauth_error_fields
from relay.aws.lease import Lease, LeaseState
from relay.flows.aps_token_refresher import (
    ApsTokenRefresher,
    Decision,
    RefresherConfig,
    decide,
    fingerprint,
    refresh_token_age_days,
)
from relay.transport.requestor import Requestor
from relay.transport.retry import RetryPolicy
from tests.unit.conftest import create_tables_from_template
from tests.unit.fakes import FakeResponse, FakeSession

NOW = 1_000_000.0
MARGIN = 1200.0
BASE = {"client_id": "cid", "client_secret": "csecret", "token_url": "https://aps.example/authentication/v2/token"}


def secret(**fields: Any) -> PlatformSecret:
    raw = {**BASE, "refresh_token": "rt-1", "access_token": "at-1", "expires_at": NOW + 3000, **fields}
    return PlatformSecret.parse(
        {k: v for k, v in raw.items() if v is not None}, secret_id="s/aps", default_token_url="x", default_scope="y"
    )


@pytest.mark.parametrize(
    ("fields", "state", "decision"),
    [
        ({}, LeaseState(), Decision.FRESH),
        ({"expires_at": NOW + MARGIN + 1}, LeaseState(), Decision.FRESH),
        ({"expires_at": NOW + MARGIN}, LeaseState(), Decision.REFRESH),  # within the margin
        ({"expires_at": NOW - 10}, LeaseState(), Decision.REFRESH),  # already expired: the refresher may
        ({"access_token": None}, LeaseState(), Decision.REFRESH),
        ({"expires_at": None}, LeaseState(), Decision.REFRESH),
        ({"refresh_token": None}, LeaseState(), Decision.LOGIN_REQUIRED),
        ({}, LeaseState(dead_refresh=fingerprint("rt-1")), Decision.LOGIN_REQUIRED),
        ({"expires_at": NOW - 10}, LeaseState(dead_refresh=fingerprint("rt-0")), Decision.REFRESH),  # signed in anew
        ({"expires_at": NOW + 100}, LeaseState(spent_refresh=fingerprint("rt-1")), Decision.STALE_READ),
        ({}, LeaseState(spent_refresh=fingerprint("rt-1")), Decision.STALE_READ),
        ({"expires_at": NOW + 100}, LeaseState(spent_refresh=fingerprint("rt-0")), Decision.REFRESH),
    ],
)
def test_when_to_refresh(fields, state, decision):
    assert decide(secret(**fields), NOW, MARGIN, state) is decision


def test_refresh_token_age():
    assert refresh_token_age_days(secret(), NOW) is None
    assert refresh_token_age_days(secret(refresh_token_issued_at=NOW - 13.5 * 86400), NOW) == pytest.approx(13.5)
    assert refresh_token_age_days(secret(refresh_token_issued_at=NOW + 60), NOW) == 0.0  # clock skew


def test_fingerprint_is_not_the_token():
    assert "rt-1" not in fingerprint("rt-1")
    assert len(fingerprint("rt-1")) == 64


@pytest.fixture
def aws(aws_env):
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        tables = create_tables_from_template(ddb)
        yield ddb, sm, tables["TokenLeaseTable"]


def test_the_lease_table_is_keyed_as_the_lease_writes_it(aws):
    ddb, _, table = aws
    assert ddb.describe_table(TableName=table)["Table"]["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]


def test_one_lease_holder_at_a_time_until_expiry(aws):
    ddb, _, table = aws
    now = [NOW]
    first = Lease(table, ddb, "aps-refresh#s", seconds=120, clock=lambda: now[0])
    second = Lease(table, ddb, "aps-refresh#s", seconds=120, clock=lambda: now[0])
    other_secret = Lease(table, ddb, "aps-refresh#t", seconds=120, clock=lambda: now[0])
    assert first.acquire() == LeaseState()
    assert second.acquire() is None  # held
    assert other_secret.acquire() == LeaseState()  # one lease per secret
    now[0] += 121
    assert second.acquire() == LeaseState()  # expired: a killed holder never blocks for long
    assert first.release(spent_refresh="old") is False  # it lost the lease: it must not free it
    assert second.release(spent_refresh="spent", dead_refresh="abc") is True
    third = Lease(table, ddb, "aps-refresh#s", seconds=120, clock=lambda: now[0])
    assert third.acquire() == LeaseState(spent_refresh="spent", dead_refresh="abc")  # what runs remember


class Recorder:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.names.append(name)


def refresher(aws, script: list[Any], value: dict[str, Any], clock=lambda: NOW) -> tuple[ApsTokenRefresher, Any]:
    ddb, sm, table = aws
    sm.create_secret(Name="s/aps", SecretString=json.dumps(value))
    store = SecretStore("s/aps", default_token_url="x", default_scope="y", provider=SecretsProvider(boto3_client=sm))
    endpoint = Requestor(
        "https://aps.example/authentication/v2/token",
        tokens=None,
        session=FakeSession(script),  # type: ignore[arg-type]
        policy=RetryPolicy(jitter=lambda d: d),
        sleep=lambda s: None,
        error_fields=oauth_error_fields,
    )
    config = RefresherConfig(table, MARGIN, 13.0, 120.0)
    return ApsTokenRefresher(config, store, sm, ddb, endpoint, Recorder(), clock=clock), endpoint


def stored(aws) -> dict[str, Any]:
    return dict(json.loads(aws[1].get_secret_value(SecretId="s/aps")["SecretString"]))


def test_a_fresh_token_is_left_alone(aws):
    run, endpoint = refresher(aws, [], {**BASE, "refresh_token": "rt", "access_token": "at", "expires_at": NOW + 3000})
    assert run.run()["status"] == "fresh"
    assert endpoint.session.sent == []  # type: ignore[attr-defined]


def test_a_refresh_writes_the_new_pair_at_once_and_keeps_other_fields(aws):
    answer = FakeResponse(200, {"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 3600})
    value = {**BASE, "refresh_token": "rt-1", "access_token": "at-1", "expires_at": NOW + 60, "signed_in_as": "Ann"}
    run, endpoint = refresher(aws, [answer], value)
    result = run.run()
    assert result["status"] == "refreshed"
    after = stored(aws)
    assert (after["access_token"], after["refresh_token"], after["expires_at"]) == ("at-2", "rt-2", NOW + 3600)
    assert after["refresh_token_issued_at"] == NOW
    assert after["signed_in_as"] == "Ann"
    assert after["client_secret"] == "csecret"
    form = endpoint.session.sent[0][2]["data"]  # type: ignore[attr-defined]
    assert form["grant_type"] == "refresh_token"
    assert "at-2" not in json.dumps(result)
    assert run.metrics.names == ["ApsTokenRefreshed"]  # type: ignore[attr-defined]


def test_invalid_grant_is_login_required_once_and_then_no_more_calls(aws):
    refused = FakeResponse(400, {"error": "invalid_grant", "error_description": "used"})
    value = {**BASE, "refresh_token": "rt-dead", "access_token": "at-1", "expires_at": NOW - 5}
    run, endpoint = refresher(aws, [refused], value)
    assert run.run()["status"] == "login_required"
    assert run.run() == {"status": "login_required", "refreshTokenAgeDays": None, "error": "ApsLoginRequired"}
    assert len(endpoint.session.sent) == 1  # type: ignore[attr-defined]
    assert run.metrics.names == ["ApsLoginRequired", "ApsLoginRequired"]  # type: ignore[attr-defined]
    assert stored(aws)["refresh_token"] == "rt-dead"  # untouched: only aps-login writes a new one


def test_an_unreachable_endpoint_raises_and_frees_the_lease(aws):
    from relay.errors import TokenEndpointError

    value = {**BASE, "refresh_token": "rt", "access_token": "at", "expires_at": NOW + 60}
    run, _ = refresher(aws, [FakeResponse(503)] * 10, value)
    with pytest.raises(TokenEndpointError):
        run.run()
    with pytest.raises(TokenEndpointError):
        run.run()  # not "busy": the failed run released its lease


def test_an_old_refresh_token_warns(aws):
    value = {**BASE, "refresh_token": "rt", "access_token": "at", "expires_at": NOW + 3000}
    run, _ = refresher(aws, [], {**value, "refresh_token_issued_at": NOW - 14 * 86400})
    assert run.run()["refreshTokenAgeDays"] == 14.0
    assert run.metrics.names == ["ApsRefreshTokenAging"]  # type: ignore[attr-defined]


def test_the_sample_event_is_a_scheduled_eventbridge_event():
    from tests.conftest import load_event

    event = load_event("schedule-aps-token-refresh.json")
    assert event["source"] == "aws.events"
    assert event["detail-type"] == "Scheduled Event"
