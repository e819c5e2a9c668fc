"""Signed iTwin webhooks (POST /webhooks/itwin, no IAM: the signature is the authorisation) → archive requests."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.flows.itwin_webhooks import build_itwin_webhooks
from relay.observability import logger, metrics, tracer

# A plain handler, not a resolver: the raw body must be verified before anything parses it.
flow = build_itwin_webhooks()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return flow.handle(event)
