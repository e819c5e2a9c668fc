"""S3 upload notifications (via SQS) → iTwin issue and form attachments."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.itwin_relay import build_itwin_relay
from relay.observability import logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)
relay = build_itwin_relay()


@tracer.capture_method(capture_response=False)
def record_handler(record: SQSRecord) -> None:
    receive_count = int(record.attributes.approximate_receive_count or 1)
    with logger.append_context_keys(message_id=record.message_id):
        relay.handle_message(record.message_id, record.body, receive_count)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    relay.start_invocation(context)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
