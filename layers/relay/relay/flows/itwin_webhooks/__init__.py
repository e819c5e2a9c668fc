"""Signed iTwin webhooks (`ItwinWebhooksFunction`, `functions/itwin_webhooks`): attached files are archived once."""

from relay.flows.itwin_webhooks.flow import (
    ROUTE,
    ItwinWebhooksFlow,
    WebhookSecretStore,
    build_itwin_webhooks,
    raw_body,
)
from relay.flows.itwin_webhooks.signature import WebhookSecrets, sign, verify

__all__ = [
    "ROUTE",
    "ItwinWebhooksFlow",
    "WebhookSecretStore",
    "WebhookSecrets",
    "build_itwin_webhooks",
    "raw_body",
    "sign",
    "verify",
]
