"""The refresher built from Settings, once per container; every collaborator can be injected."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from relay import constants as c
from relay.flows.aps_token_refresher.refresher import ApsTokenRefresher, MetricsSink, RefresherConfig
from relay.observability import metrics as powertools_metrics
from relay.settings import Settings
from relay.vendors.factory import secret_store, token_endpoint


def build_aps_token_refresher(
    settings: Settings | None = None,
    *,
    provider: SecretsProvider | None = None,
    secrets_client: Any = None,
    dynamodb_client: Any = None,
    metrics: MetricsSink | None = None,
    clock: Callable[[], float] = time.time,
    **endpoint_options: Any,
) -> ApsTokenRefresher:
    settings = settings or Settings.load()
    secrets_client = secrets_client or boto3.client("secretsmanager")
    store = secret_store(
        settings,
        "aps_secret_id",
        c.DEFAULT_APS_TOKEN_URL,
        c.DEFAULT_APS_SCOPE,
        provider or SecretsProvider(boto3_client=secrets_client),
    )
    config = RefresherConfig(
        lease_table=settings.require("token_lease_table"),
        margin_seconds=settings.aps_refresh_margin_minutes * 60,
        warn_days=settings.aps_refresh_token_warn_days,
        lease_seconds=c.TOKEN_LEASE_SECONDS,
    )
    return ApsTokenRefresher(
        config,
        store,
        secrets_client,
        dynamodb_client or boto3.client("dynamodb"),
        token_endpoint(settings, c.DEFAULT_APS_TOKEN_URL, **endpoint_options),
        metrics or powertools_metrics,
        clock=clock,
    )
