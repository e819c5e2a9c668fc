"""Vendor clients built once per container from Settings; every collaborator can be injected."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import requests
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from relay import constants as c
from relay.aps import ApsClient
from relay.http import Requestor, RetryPolicy, TokenSource
from relay.itwin import ITwinClient, itwin_headers
from relay.settings import Settings
from relay.tokens import ClientCredentialsTokens, SecretStore, StoredTokens


def _store(settings: Settings, field: str, token_url: str, scope: str, provider: SecretsProvider | None) -> SecretStore:
    return SecretStore(
        settings.require(field),
        default_token_url=token_url,
        default_scope=scope,
        provider=provider,
        max_age=settings.secret_max_age,
    )


def _requestor(
    settings: Settings,
    base_url: str,
    tokens: TokenSource,
    *,
    token_hosts: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None,
    policy: RetryPolicy | None,
    sleep: Callable[[float], None],
) -> Requestor:
    return Requestor(
        base_url,
        tokens=tokens,
        token_hosts=token_hosts,
        default_headers=headers,
        session=session,
        policy=policy or RetryPolicy(max_attempts=settings.max_attempts),
        timeout=(settings.connect_timeout, settings.read_timeout),
        sleep=sleep,
    )


def itwin_client(
    settings: Settings,
    *,
    provider: SecretsProvider | None = None,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ITwinClient:
    store = _store(settings, "itwin_secret_id", c.DEFAULT_ITWIN_TOKEN_URL, c.DEFAULT_ITWIN_SCOPE, provider)
    tokens = ClientCredentialsTokens(store, session=session)
    return ITwinClient(
        _requestor(
            settings,
            settings.itwin_api_url,
            tokens,
            # Upload Locations may name these hosts too; the token goes nowhere else.
            token_hosts=settings.allowed_upload_hosts,
            headers=itwin_headers(),
            session=session,
            policy=policy,
            sleep=sleep,
        )
    )


def aps_client(
    settings: Settings,
    *,
    provider: SecretsProvider | None = None,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ApsClient:
    store = _store(settings, "aps_secret_id", c.DEFAULT_APS_TOKEN_URL, c.DEFAULT_APS_SCOPE, provider)
    return ApsClient(
        _requestor(settings, settings.aps_api_url, StoredTokens(store), session=session, policy=policy, sleep=sleep)
    )
