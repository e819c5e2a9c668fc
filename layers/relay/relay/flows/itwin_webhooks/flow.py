"""Signed iTwin webhooks: verify the raw body first, then deduplicate on messageId, then act and answer fast."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import boto3
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from botocore.exceptions import BotoCoreError, ClientError

from relay.auth.secrets import default_secrets_provider
from relay.aws.deliveries import Claim, WebhookDeliveries
from relay.aws.queues import WorkQueue
from relay.errors import ConfigurationError, ObjectStoreError, RelayError
from relay.flows.archive.archiver import ArchiveRequest
from relay.flows.itwin_webhooks.signature import WebhookSecrets, signature_values, verify
from relay.observability import logger, metrics
from relay.settings import Settings
from relay.vendors.itwin import Kind, usable_id

ROUTE = "/webhooks/itwin"
ATTACHED, UNATTACHED = "attachmentAttached.v1", "attachmentUnattached.v1"
PARENT_FIELD: dict[str, tuple[Kind, str]] = {"issues": ("issues", "issueId"), "forms": ("forms", "formId")}
UNATTACHED_TAG = ("relay-status", "unattached")
# One body for every refusal of the signature check: it never says which part failed.
# A redelivery that finds the first delivery still working waits this long for it (well within iTwin's ~5 s).
IN_FLIGHT_WAIT_SECONDS, IN_FLIGHT_POLL_SECONDS = 1.0, 0.1
UNAUTHORIZED = {"code": "Unauthorized", "message": "the delivery is not signed with the webhook secret"}


class WebhookSecretStore:
    """The webhook secret through Powertools' cached SecretsProvider, checked (≥ 32 characters) on every read."""

    def __init__(self, secret_id: str, *, provider: SecretsProvider | None = None, max_age: int = 300) -> None:
        if not secret_id:
            raise ConfigurationError("RELAY_WEBHOOK_SECRET_ID is not set")
        self.secret_id = secret_id
        self.provider = provider or default_secrets_provider()
        self.max_age = max_age

    def get(self, *, force: bool = False) -> WebhookSecrets:
        try:
            raw = self.provider.get(self.secret_id, max_age=self.max_age, transform="json", force_fetch=force)
        except TransformParameterError:
            raise ConfigurationError(f"secret {self.secret_id!r} is not valid JSON") from None
        except GetParameterError as exc:
            cause = type(exc.__cause__).__name__
            raise ConfigurationError(f"secret {self.secret_id!r} could not be read: {cause}") from None
        return WebhookSecrets.parse(raw, secret_id=self.secret_id)


def answer(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body),
    }


def unavailable() -> dict[str, Any]:
    """503: nothing is acknowledged, and iTwin's resend (or any caller's retry) will be handled."""
    return answer(503, {"code": "Unavailable", "message": "try again"}, {"Retry-After": "1"})


def raw_body(event: Mapping[str, Any]) -> bytes:
    """The body exactly as iTwin sent it (API Gateway passes non-UTF-8 bodies base64-encoded)."""
    body = event.get("body") or ""
    if not isinstance(body, str):
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return b""
    return body.encode("utf-8")


def declared_media_type(headers: Mapping[str, Any] | None) -> str | None:
    """The request's Content-Type without parameters, lower-cased; None when it states none."""
    values = [v for name, v in (headers or {}).items() if name.lower() == "content-type" and isinstance(v, str)]
    if not values or not values[0].strip():
        return None
    return values[0].split(";", 1)[0].strip().lower()


class ItwinWebhooksFlow:
    def __init__(
        self,
        settings: Settings,
        secrets: WebhookSecretStore,
        deliveries: WebhookDeliveries,
        queue: WorkQueue,
        s3_client: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self.secrets = secrets
        self.deliveries = deliveries
        self.queue = queue
        self.s3 = s3_client
        self.bucket = settings.archive_bucket

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """One delivery → its proxy response. Nothing is parsed before the signature is checked."""
        body = event.get("body") or ""
        # A cheap bound first (base64 is 4/3 of the bytes), then the exact one; both before any hashing.
        if isinstance(body, str) and len(body) > 2 * self.settings.webhook_max_body_bytes:
            return self._too_large()
        raw = raw_body(event)
        if len(raw) > self.settings.webhook_max_body_bytes:
            return self._too_large()
        try:
            secrets = self.secrets.get()
        except ConfigurationError as error:
            logger.error("the webhook secret is unusable", extra={"error": error.code, "detail": error.message})
            return answer(500, {"code": "InternalError", "message": "the delivery could not be checked"})
        values = signature_values(event.get("headers"), event.get("multiValueHeaders"))
        if not verify(raw, values, secrets):
            # Neither the secret nor the expected signature is logged; only that the check failed.
            logger.warning("webhook refused: signature check failed", extra={"bytes": len(raw)})
            metrics.add_metric(name="WebhooksRefused", unit="Count", value=1)
            return answer(401, UNAUTHORIZED)
        media_type = declared_media_type(event.get("headers"))
        if media_type is not None and media_type != "application/json" and not media_type.endswith("+json"):
            return answer(415, {"code": "UnsupportedMediaType", "message": "a delivery is application/json"})
        try:
            delivery = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays or objects
            return answer(400, {"code": "BadRequest", "message": "the body is not JSON"})
        if not isinstance(delivery, dict):
            return answer(400, {"code": "BadRequest", "message": "the body is not a JSON object"})
        message_id, event_type = delivery.get("messageId"), delivery.get("eventType")
        if not usable_id(message_id) or not isinstance(event_type, str):
            return answer(400, {"code": "BadRequest", "message": "messageId and eventType are required"})
        return self._act(cast(str, message_id), event_type, delivery.get("content"))

    def _too_large(self) -> dict[str, Any]:
        limit = self.settings.webhook_max_body_bytes
        return answer(413, {"code": "PayloadTooLarge", "message": f"a delivery may hold at most {limit} bytes"})

    def _act(self, message_id: str, event_type: str, content: object) -> dict[str, Any]:
        where = {"messageId": message_id, "eventType": event_type}
        family, _, name = event_type.partition(".")
        target = None
        if name in (ATTACHED, UNATTACHED) and family in PARENT_FIELD:
            target = _target(family, content)
            if target is None:
                return answer(400, {"code": "BadRequest", "message": "the content names no usable attachment"})
        try:
            claim, token = self._claim(message_id, event_type)
        except RelayError as error:
            logger.error("webhook not deduplicated", extra={**where, "error": error.code})
            return unavailable()
        if claim is Claim.DONE:
            logger.info("webhook redelivered; nothing new to do", extra=where)
            metrics.add_metric(name="WebhooksRedelivered", unit="Count", value=1)
            return answer(202, {"status": "duplicate"})
        if claim is Claim.IN_FLIGHT:
            # Another invocation holds the work and has not finished it: acknowledging now would lose the event
            # if that one fails. iTwin resends; by then it is done (202) or its claim has gone stale (retaken).
            logger.info("webhook redelivered while the first delivery is in flight", extra=where)
            return unavailable()
        try:
            if target is None:
                action = "ignored"
                logger.info("webhook event ignored", extra=where)
            elif name == ATTACHED:
                action = "queued"
                self.queue.send([ArchiveRequest.by_id(*target).body()])
                logger.info("webhook queued an archive", extra={**where, "attachment": target[2]})
            else:
                action = "unattached"
                keys = self._mark_unattached(*target)
                logger.info("webhook marked the archived copy unattached", extra={**where, "keys": keys})
        except RelayError as error:
            # Nothing was done: forget this claim, so iTwin's resend does the work.
            self.deliveries.release(message_id, token)
            logger.error("webhook action failed", extra={**where, "error": error.code})
            return unavailable()
        try:
            self.deliveries.done(message_id, action)
        except RelayError as error:
            # The work is done: answer 202 so it is not done twice. The claim stays "received", so a resend
            # within the stale window answers 503, and after it takes the claim over (the archive is idempotent
            # on the attachment, so a second request makes no second copy).
            logger.warning("webhook work done but its claim not settled", extra={**where, "error": error.code})
        metrics.add_metric(name=f"Webhooks{action.capitalize()}", unit="Count", value=1)
        return answer(202, {"status": action})

    def _claim(self, message_id: str, event_type: str) -> tuple[Claim, str]:
        """Claim the delivery; a redelivery that finds the first one in flight waits briefly for it to finish."""
        claim, token = self.deliveries.claim(message_id, event_type)
        waited = 0.0
        while claim is Claim.IN_FLIGHT and waited < IN_FLIGHT_WAIT_SECONDS:
            self.sleep(IN_FLIGHT_POLL_SECONDS)
            waited += IN_FLIGHT_POLL_SECONDS
            claim = self.deliveries.state(message_id)
        return claim, token

    def _mark_unattached(self, kind: Kind, parent_id: str, attachment_id: str) -> list[str]:
        """Tag every archived copy of the attachment `relay-status=unattached` (never delete it), and record it."""
        prefix = f"archive/{kind}/{parent_id}/{attachment_id}/"
        try:
            listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
            keys = [o["Key"] for o in listed.get("Contents", [])]
            for key in keys:
                tags = {t["Key"]: t["Value"] for t in self.s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]}
                tags[UNATTACHED_TAG[0]] = UNATTACHED_TAG[1]
                self.s3.put_object_tagging(
                    Bucket=self.bucket,
                    Key=key,
                    Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
                )
        except (ClientError, BotoCoreError) as exc:
            raise ObjectStoreError(f"tagging under {prefix} failed: {type(exc).__name__}") from exc
        self.deliveries.record(
            f"unattached#{kind}/{parent_id}/{attachment_id}",
            {"status": "unattached", "keys": ",".join(keys) or "-", "copies": len(keys)},
        )
        return keys


def _target(family: str, content: object) -> tuple[Kind, str, str] | None:
    kind, field = PARENT_FIELD[family]
    if not isinstance(content, dict):
        return None
    attachment_id, parent_id = content.get("attachmentId"), content.get(field)
    if not usable_id(attachment_id) or not usable_id(parent_id):
        return None
    return kind, cast(str, parent_id), cast(str, attachment_id)


def build_itwin_webhooks(
    settings: Settings | None = None,
    *,
    s3_client: Any = None,
    sqs_client: Any = None,
    dynamodb_client: Any = None,
    secrets_provider: SecretsProvider | None = None,
) -> ItwinWebhooksFlow:
    """Wire the receiver once per container. The secret is read now: an unusable one stops the function."""
    settings = settings or Settings.load()
    store = WebhookSecretStore(
        settings.require("webhook_secret_id"), provider=secrets_provider, max_age=settings.secret_max_age
    )
    store.get()  # ConfigurationError at start: a short or missing secret never accepts silently
    flow = ItwinWebhooksFlow(
        settings,
        store,
        WebhookDeliveries(
            settings.require("webhook_deliveries_table"),
            dynamodb_client or boto3.client("dynamodb"),
            ttl_seconds=settings.webhook_dedupe_seconds,
        ),
        WorkQueue(sqs_client or boto3.client("sqs"), settings.require("archive_queue_url")),
        s3_client or boto3.client("s3"),
    )
    settings.require("archive_bucket")
    return flow
