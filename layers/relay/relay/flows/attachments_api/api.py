"""The REST resolver: the routers, the OpenAPI document, and the one place an error becomes an answer."""

from __future__ import annotations

import json
import math

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import APIKey

from relay.errors import (
    ArchiveJobNotFoundError,
    AuthenticationError,
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    ObjectStoreError,
    Outcome,
    PermissionDeniedError,
    QueueError,
    RateLimitedError,
    RecordStoreError,
    RelayError,
    TokenEndpointError,
    VendorError,
    redact,
)
from relay.flows.attachments_api import archive_jobs, attachments
from relay.flows.attachments_api.models import ErrorBody
from relay.observability import logger

TITLE, VERSION = "attachment-relay", "1.0.0"
DEFAULT_RETRY_AFTER = 5
SIGV4 = APIKey.model_validate(
    {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "description": "AWS Signature Version 4 (IAM): sign with your AWS credentials, e.g. with awscurl.",
        "x-amazon-apigateway-authtype": "awsSigv4",
    }
)

app = APIGatewayRestResolver(enable_validation=True)
app.include_router(attachments.router)
app.include_router(archive_jobs.router)


def openapi_document() -> str:
    """The OpenAPI document Powertools generates from the routes; docs/openapi.json is this, checked in."""
    document = json.loads(
        app.get_openapi_json_schema(
            title=TITLE,
            version=VERSION,
            description=(
                "List, hand out and archive Bentley iTwin issue and form attachments. Every route is IAM-authorised "
                "(SigV4) but POST /webhooks/itwin, which iTwin calls and whose HMAC signature is its authorisation. "
                "Files are never in a response: /file answers 302 to a pre-signed S3 URL."
            ),
            security_schemes={"sigv4": SIGV4},
            security=[{"sigv4": []}],
        )
    )
    # The webhook is its own function (it must verify the raw body before any parsing), not a resolver route.
    document["paths"]["/webhooks/itwin"] = WEBHOOK_PATH
    return json.dumps(document)


def _error_response(description: str) -> dict[str, object]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


WEBHOOK_PATH = {
    "post": {
        "summary": "Receive a signed iTwin webhook (v2) delivery",
        "description": (
            "The API's only route without IAM: iTwin cannot sign with SigV4, so the signature is the authorisation. "
            "`Signature: sha256=<hex>` must be the HMAC-SHA256 of the raw body keyed with the webhook secret "
            "(exactly one header, lower-case prefix and hex, no whitespace); it is checked before the body is parsed. "
            "attachmentAttached.v1 queues an archive, attachmentUnattached.v1 tags the archived copy "
            "relay-status=unattached, anything else is ignored. Deliveries are deduplicated on messageId."
        ),
        "operationId": "itwin_webhook",
        "security": [],
        "parameters": [
            {
                "name": "Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["messageId", "eventType", "content"],
                        "properties": {
                            "content": {"type": "object"},
                            "eventType": {"type": "string"},
                            "enqueuedDateTime": {"type": "string"},
                            "iTwinId": {"type": "string"},
                            "messageId": {"type": "string"},
                            "webhookId": {"type": "string"},
                        },
                    }
                }
            },
        },
        "responses": {
            "202": {"description": "Accepted (queued, tagged, ignored, or a redelivery)"},
            "400": _error_response("Validly signed, but not a JSON delivery"),
            "401": _error_response("The signature is missing, malformed or does not match (one body for every case)"),
            "413": _error_response("The body is over the limit (256 KiB by default)"),
            "415": _error_response("Validly signed, but its Content-Type is not application/json"),
            "503": _error_response("The delivery could not be recorded or queued; iTwin resends it"),
        },
    }
}


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(200, content_types.APPLICATION_JSON, openapi_document())


def error_answer(error: Exception) -> tuple[int, str, str, dict[str, str], str | None]:
    """(status, code, message, headers, field) for any error: the whole error table of the API."""
    if isinstance(error, RequestValidationError):
        problems = error.errors()
        first = problems[0] if problems else {}
        location = [str(part) for part in first.get("loc", ())]
        field = location[-1] if location else None
        where = f"{location[0]} parameter {field}" if len(location) > 1 else "the request"
        return 422, "ValidationError", f"{where} is invalid ({first.get('type', 'invalid')})", {}, field
    if isinstance(error, InvalidInputError):
        return 422, error.code, error.message, {}, error.field
    if isinstance(error, RouteNotFoundError):
        return 404, "RouteNotFound", "no such route", {}, None
    if isinstance(error, ServiceError):
        return error.status_code, "RequestError", str(error.msg), {}, None
    if isinstance(error, ArchiveJobNotFoundError):
        return 404, error.code, error.message, {}, None
    if isinstance(error, NotFoundError):
        return 404, error.code, error.message, {}, None
    if isinstance(error, TokenEndpointError) and not error.refused:
        message = f"iTwin's token endpoint could not be reached ({error.code}); retry later"
        return 503, "ItwinUnavailable", message, {"Retry-After": str(DEFAULT_RETRY_AFTER)}, None
    if isinstance(error, AuthenticationError | PermissionDeniedError | TokenEndpointError):
        status = f"HTTP {error.http_status} " if isinstance(error, VendorError) and error.http_status else ""
        message = (
            f"iTwin refused the relay's own credentials ({status}{error.code}): check the iTwin secret's client "
            "and the app's iTwin permissions. This is the deployment's configuration, not your request."
        )
        return 502, "ItwinCredentialsRejected", message, {}, None
    if isinstance(error, ConfigurationError):
        return 500, error.code, f"the relay is misconfigured: {error.message}", {}, None
    if isinstance(error, VendorError) and error.outcome is Outcome.RETRY:
        wait = str(max(1, math.ceil(error.retry_after or DEFAULT_RETRY_AFTER)))
        code = "ItwinRateLimited" if isinstance(error, RateLimitedError) else "ItwinUnavailable"
        return 503, code, f"iTwin did not answer in time ({error}); retry later", {"Retry-After": wait}, None
    if isinstance(error, ObjectStoreError | RecordStoreError | QueueError):
        # The detail (bucket, key, table) is logged, never answered.
        message = "the relay's AWS storage or queue did not answer; retry later"
        return 503, error.code, message, {"Retry-After": str(DEFAULT_RETRY_AFTER)}, None
    if isinstance(error, RelayError):
        return 502, error.code, f"iTwin's answer could not be used: {error}", {}, None
    return 500, "InternalError", "unexpected error: quote the request id", {}, None


def handle_error(error: Exception) -> Response[str]:
    status, code, message, headers, field = error_answer(error)
    request_id = _request_id()
    details = {"status": status, "error": code, "requestId": request_id}
    if status == 500 and not isinstance(error, RelayError):
        logger.exception("unexpected error", extra=details)
    elif status >= 500:
        logger.error(redact(str(error)), extra=details)  # the whole detail here; the caller's body is shorter
    else:
        logger.info("request refused", extra=details)
    body = ErrorBody(code=code, message=redact(message), requestId=request_id, field=field)
    return Response(status, content_types.APPLICATION_JSON, body.model_dump_json(exclude_none=True), headers=headers)


app.exception_handler(Exception)(handle_error)  # every error, Powertools' validation errors included


def _request_id() -> str:
    try:
        request_id = app.current_event.request_context.request_id
    except (AttributeError, KeyError, TypeError):
        request_id = None
    if not request_id and app.lambda_context is not None:
        request_id = getattr(app.lambda_context, "aws_request_id", None)
    return str(request_id or "unknown")
