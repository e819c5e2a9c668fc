"""Vendor clients built from Settings, once per container; every collaborator can be injected."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import requests
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from relay import constants as c
from relay.auth.secrets import SecretStore
from relay.auth.tokens import ClientCredentialsTokens, StoredTokens, oauth_error_fields
from relay.errors import ConfigurationError, ErrorParser, UnsafeLocationError, generic_error_fields
from relay.settings import Settings
from relay.transport.requestor import Requestor, TokenSource
from relay.transport.retry import RetryPolicy
from relay.vendors.itwin import ITwinClient, itwin_error_fields, itwin_headers

if TYPE_CHECKING:
    from relay.vendors.aps import ApsClient


def policy_from(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        base_delay=settings.retry_base_delay,
        max_delay=settings.retry_max_delay,
        max_retry_after=settings.max_retry_after,
    )


def secret_store(
    settings: Settings, field: str, token_url: str, scope: str, provider: SecretsProvider | None
) -> SecretStore:
    return SecretStore(
        settings.require(field),
        default_token_url=token_url,
        default_scope=scope,
        provider=provider,
        max_age=settings.secret_max_age,
    )


def requestor(
    settings: Settings,
    base_url: str,
    tokens: TokenSource | None,
    *,
    token_hosts: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    local: bool | None = None,
    error_fields: ErrorParser = generic_error_fields,
) -> Requestor:
    try:
        return Requestor(
            base_url,
            tokens=tokens,
            token_hosts=token_hosts,
            default_headers=headers,
            session=session,
            policy=policy or policy_from(settings),
            timeout=(settings.connect_timeout, settings.read_timeout),
            sleep=sleep,
            local=local,
            error_fields=error_fields,
        )
    except UnsafeLocationError as error:
        raise ConfigurationError(f"{base_url} and its allowed hosts: {error.message}") from None


def itwin_requestor(
    settings: Settings,
    *,
    provider: SecretsProvider | None = None,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Requestor:
    """The iTwin requestor: client-credentials tokens, the Accept header, and the hosts the token may reach."""
    store = secret_store(settings, "itwin_secret_id", c.DEFAULT_ITWIN_TOKEN_URL, c.DEFAULT_ITWIN_SCOPE, provider)
    endpoint = token_endpoint(settings, c.DEFAULT_ITWIN_TOKEN_URL, session=session, policy=policy, sleep=sleep)
    return requestor(
        settings,
        settings.itwin_api_url,
        ClientCredentialsTokens(store, endpoint),
        # Upload Locations may name these hosts too; the token goes nowhere else.
        token_hosts=settings.allowed_upload_hosts,
        headers=itwin_headers(),
        session=session,
        policy=policy,
        sleep=sleep,
        error_fields=itwin_error_fields,
    )


def token_endpoint(
    settings: Settings,
    default_url: str,
    *,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Requestor:
    """Posts to a platform's OAuth token endpoint: the client secret goes only to `default_url`'s origin,
    or to one in RELAY_ALLOWED_TOKEN_HOSTS (plain http only for a local deployment)."""
    return requestor(
        settings,
        default_url,
        None,
        token_hosts=settings.allowed_token_hosts,
        session=session,
        policy=policy,
        sleep=sleep,
        local=settings.itwin_api_url.startswith("http://") or settings.aps_api_url.startswith("http://"),
        error_fields=oauth_error_fields,
    )


def itwin_client(settings: Settings, **options: Any) -> ITwinClient:
    return ITwinClient(itwin_requestor(settings, **options))


def aps_client(
    settings: Settings,
    *,
    provider: SecretsProvider | None = None,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ApsClient:
    # Imported here: only the functions that talk to APS load its client (and its thread pool).
    from relay.vendors.aps import ApsClient, aps_error_fields

    store = secret_store(settings, "aps_secret_id", c.DEFAULT_APS_TOKEN_URL, c.DEFAULT_APS_SCOPE, provider)
    return ApsClient(
        requestor(
            settings,
            settings.aps_api_url,
            StoredTokens(store),
            session=session,
            policy=policy,
            sleep=sleep,
            error_fields=aps_error_fields,
        )
    )
