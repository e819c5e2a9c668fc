"""Scheduled (EventBridge) → the APS token pair kept fresh in its secret, by one writer."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.flows.aps_token_refresher import build_aps_token_refresher
from relay.observability import logger, metrics, tracer

refresher = build_aps_token_refresher()


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return refresher.run(context)
