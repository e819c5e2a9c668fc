"""Vendor clients built once per container from Settings; every collaborator can be injected."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from relay import constants as c
from relay.aps import ApsClient
from relay.http import Requestor, RetryPolicy
from relay.itwin import ITwinClient, itwin_headers
from relay.settings import Settings
from relay.tokens import ClientCredentialsTokens, SecretStore, StoredTokens


def itwin_client(
    settings: Settings,
    *,
    provider: SecretsProvider | None = None,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ITwinClient:
    store = SecretStore(
        settings.require("itwin_secret_id"),
        default_token_url=c.DEFAULT_ITWIN_TOKEN_URL,
        default_scope=c.DEFAULT_ITWIN_SCOPE,
        provider=provider,
        max_age=settings.secret_max_age,
    )
    requestor = Requestor(
        settings.itwin_api_url,
        tokens=ClientCredentialsTokens(store, session=session),
        token_hosts=settings.allowed_upload_hosts,
        default_headers=itwin_headers(),
        session=session,
        policy=policy or RetryPolicy(max_attempts=settings.max_attempts),
        timeout=(settings.connect_timeout, settings.read_timeout),
        sleep=sleep,
    )
    return ITwinClient(requestor)


def aps_client(
    settings: Settings,
    *,
    provider: SecretsProvider | None = None,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ApsClient:
    store = SecretStore(
        settings.require("aps_secret_id"),
        default_token_url=c.DEFAULT_APS_TOKEN_URL,
        default_scope=c.DEFAULT_APS_SCOPE,
        provider=provider,
        max_age=settings.secret_max_age,
    )
    requestor = Requestor(
        settings.aps_api_url,
        tokens=StoredTokens(store),
        token_hosts=(),
        session=session,
        policy=policy or RetryPolicy(max_attempts=settings.max_attempts),
        timeout=(settings.connect_timeout, settings.read_timeout),
        sleep=sleep,
    )
    return ApsClient(requestor)
