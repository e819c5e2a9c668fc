"""The S3 → iTwin flow: one upload becomes exactly one attachment, resumably, with a visible outcome."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from relay import records as r
from relay.clients import itwin_client
from relay.exceptions import (
    InvalidRequestError,
    NotFoundError,
    RelayError,
    TooLargeError,
    UnsafeLocationError,
    VendorConnectionError,
    VendorError,
)
from relay.http import Deadline, RetryPolicy
from relay.itwin import CreatedAttachment, ITwinClient
from relay.observability import logger, metrics
from relay.records import TransferRecord, TransferRecords, iso
from relay.s3objects import ObjectGoneError, ObjectInfo, ObjectStore, ObjectStoreError
from relay.settings import Settings
from relay.uploads import MalformedMessageError, Target, Upload, parse_message, parse_target

IDEMPOTENCY_EXPIRY = 7 * 24 * 3600
# A create whose answer was lost is looked for among attachments made this long before it started.
ADOPT_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class Outcome:
    upload: str
    status: str
    target: str | None = None
    attachment_id: str | None = None
    bytes: int = 0
    error_code: str | None = None
    message: str | None = None


class RetryLaterError(RelayError):
    """Transient failure: the message returns to the queue; the record keeps the step reached."""

    code = "RetryLater"

    def __init__(self, cause: RelayError) -> None:
        super().__init__(str(cause), code=cause.code)
        self.cause = cause


def _status_for(error: RelayError) -> str:
    """Rejected: the file or request itself is refused. Failed: the target, access or config is wrong."""
    if isinstance(error, (TooLargeError, InvalidRequestError)):
        return r.REJECTED
    return r.FAILED


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    # Vendors send 7 fractional digits; fromisoformat on 3.11 takes at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class ItwinRelay:
    def __init__(
        self,
        *,
        settings: Settings,
        objects: ObjectStore,
        itwin: ITwinClient,
        records: TransferRecords,
        persistence: BasePersistenceLayer | None,
        max_receive_count: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.objects = objects
        self.itwin = itwin
        self.records = records
        self.max_receive_count = max_receive_count
        self.clock = clock
        self.idempotency = IdempotencyConfig(
            event_key_jmespath="[bucket, key, version]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_EXPIRY,
        )
        self._relay: Callable[..., dict[str, Any]] = (
            idempotent_function(
                self._relay_upload,
                data_keyword_argument="upload",
                persistence_store=persistence,
                config=self.idempotency,
            )
            if persistence is not None
            else self._relay_upload
        )

    def start_invocation(self, context: Any) -> None:
        """Per invocation: retries must not outlive it, and idempotency locks expire with it."""
        self.idempotency.register_lambda_context(context)
        self.itwin.requestor.deadline = Deadline.from_context(context)

    def handle_message(self, message_id: str, body: str, receive_count: int = 1) -> list[Outcome]:
        """Relay every upload in one SQS message. Raises when the message must come back."""
        try:
            uploads = parse_message(body)
        except MalformedMessageError as error:
            logger.error("malformed message", extra={"message_id": message_id, "error": str(error)})
            raise
        if not uploads:
            logger.info("skipping s3:TestEvent", extra={"message_id": message_id})
            return []
        final = self.max_receive_count is not None and receive_count >= self.max_receive_count
        results = []
        for upload in uploads:
            data = {
                **upload.as_idempotency_data(),
                "version_id": upload.version_id,
                "etag": upload.etag,
                "size": upload.size,
            }
            results.append(Outcome(**self._relay(upload=data, final_attempt=final)))
        return results

    # -- one upload ---------------------------------------------------------------------------

    def _relay_upload(self, upload: dict[str, Any], final_attempt: bool = False) -> dict[str, Any]:
        up = Upload(upload["bucket"], upload["key"], upload.get("version_id"), upload.get("etag"), upload.get("size"))
        started = self.clock()
        try:
            target = parse_target(up.key)
        except RelayError as error:
            self.records.begin(up, None)
            return self._finish(up, None, r.REJECTED, started, error=error)
        record = self.records.begin(up, target)
        if record.step == r.DONE and record.status == r.ATTACHED:
            return asdict(Outcome(up.identity, r.ATTACHED, target.describe(), record.attachment_id))
        try:
            info = self.objects.head(up)
        except ObjectGoneError as error:
            return self._finish(up, target, r.SKIPPED, started, error=error, tag=False)
        if up.version_id is None and up.etag and info.etag and info.etag != up.etag:
            superseded = RelayError("the object was overwritten before it was processed", code="Superseded")
            return self._finish(up, target, r.SKIPPED, started, error=superseded, tag=False)
        if info.size > self.settings.max_upload_bytes:
            too_large = TooLargeError(
                f"{info.size} bytes is over the {self.settings.max_upload_bytes} byte limit", code="RequestTooLarge"
            )
            return self._finish(up, target, r.REJECTED, started, error=too_large, size=info.size)
        if info.size == 0:
            empty = RelayError("the object is empty; iTwin attachments need a file", code="EmptyFile")
            return self._finish(up, target, r.REJECTED, started, error=empty)
        return self._transfer(up, target, info, record, started, final_attempt)

    def _transfer(
        self, up: Upload, target: Target, info: ObjectInfo, record: TransferRecord, started: float, final: bool
    ) -> dict[str, Any]:
        created: CreatedAttachment | None = None
        try:
            created = self._ensure_created(up, target, info, record)
            if record.step != r.UPLOADED:
                self.itwin.upload(
                    created.location, lambda: self.objects.open(up, info.size), info.size, info.content_type
                )
                self.records.update(up, step=r.UPLOADED)
            return self._finish(up, target, r.ATTACHED, started, attachment_id=created.attachment_id, size=info.size)
        except ObjectGoneError as error:
            self._discard(up, target, created)
            return self._finish(up, target, r.SKIPPED, started, error=error, tag=False)
        except VendorError as error:
            if RetryPolicy.should_retry(error):
                if not final:
                    self.records.update(up, status=r.RETRYING, error_code=error.code, error_message=str(error)[:1000])
                    logger.warning("transfer will be retried", extra={"upload": up.identity, "error": str(error)})
                    raise RetryLaterError(error) from error
                self._discard(up, target, created)
                self._finish(up, target, r.FAILED, started, error=error)
                raise RetryLaterError(error) from error  # last delivery: on to the DLQ, visibly failed
            self._discard(up, target, created)
            return self._finish(up, target, _status_for(error), started, error=error, size=info.size)
        except UnsafeLocationError as error:
            self._discard(up, target, created)
            return self._finish(up, target, r.FAILED, started, error=error)

    def _ensure_created(
        self, up: Upload, target: Target, info: ObjectInfo, record: TransferRecord
    ) -> CreatedAttachment:
        if record.step in (r.CREATED, r.UPLOADED) and record.location and record.attachment_id:
            return CreatedAttachment(record.attachment_id, record.location)  # resume: never a second POST
        if record.step == r.CREATING:
            adopted = self._adopt(target, record.creating_since)
            if adopted is not None:
                self.records.update(up, step=r.CREATED, attachment_id=adopted.attachment_id, location=adopted.location)
                return adopted
        since = iso(time.time())
        self.records.update(up, step=r.CREATING, creating_since=since)
        try:
            created = self.itwin.create_attachment(
                target.kind, target.parent_id, target.file_name, info.caption, info.binding
            )
        except VendorConnectionError:
            # The POST may have landed with its answer lost: look for it before anyone POSTs again.
            adopted = self._adopt(target, since)
            if adopted is None:
                raise
            created = adopted
        self.records.update(up, step=r.CREATED, attachment_id=created.attachment_id, location=created.location)
        record.step = r.CREATED
        return created

    def _adopt(self, target: Target, since: str | None) -> CreatedAttachment | None:
        """Find metadata an earlier, interrupted create made: same file name, no file yet, made after `since`."""
        start = _parse_time(since)
        if start is None:
            return None
        candidates = [
            a
            for a in self.itwin.list_attachments(target.kind, target.parent_id)
            if a.get("fileName") == target.file_name
            and a.get("size") in (None, 0)
            and (_parse_time(a.get("createdDateTime")) or start - 2 * ADOPT_WINDOW) >= start - ADOPT_WINDOW
        ]
        if not candidates:
            return None
        keep, *extra = sorted(candidates, key=lambda a: str(a.get("createdDateTime")))
        for orphan in extra:
            self._delete_quietly(target, str(orphan["id"]))
        path = f"/{target.kind}/{target.parent_id}/attachments/{keep['id']}"
        logger.info("adopted attachment from an interrupted create", extra={"attachment_id": keep["id"]})
        return CreatedAttachment(str(keep["id"]), self.itwin.requestor.url(path))

    def _discard(self, up: Upload, target: Target, created: CreatedAttachment | None) -> None:
        """A file that will never arrive must leave no metadata behind."""
        if created is None:
            return
        if self._delete_quietly(target, created.attachment_id):
            self.records.update(up, step=r.RECEIVED, remove=("attachment_id", "location", "creating_since"))
        else:
            self.records.update(up, orphan_attachment_id=created.attachment_id)

    def _delete_quietly(self, target: Target, attachment_id: str) -> bool:
        try:
            self.itwin.delete_attachment(target.kind, target.parent_id, attachment_id)
            return True
        except NotFoundError:
            return True
        except RelayError as error:
            logger.error(
                "could not delete metadata of a failed upload",
                extra={"attachment_id": attachment_id, "error": str(error)},
            )
            return False

    def _finish(
        self,
        up: Upload,
        target: Target | None,
        status: str,
        started: float,
        *,
        attachment_id: str | None = None,
        error: RelayError | None = None,
        size: int = 0,
        tag: bool = True,
    ) -> dict[str, Any]:
        if tag:
            try:
                self.objects.tag(up, status, attachment_id, error.code if error else None)
            except ObjectGoneError:
                pass
            except ObjectStoreError as tag_error:
                if target is not None:
                    raise  # a retry resumes at tagging
                # Outside issues/ and forms/ the role may not tag (IAM names those prefixes): the record says it.
                logger.warning("could not tag an object outside the upload prefixes", extra={"error": str(tag_error)})
        message = str(error)[:1000] if error else None
        fields: dict[str, Any] = {
            "status": status,
            "attachment_id": attachment_id,
            "error_code": error.code if error else None,
            "error_message": message,
            "bytes": size,
        }
        if status == r.ATTACHED:
            fields["step"] = r.DONE
        self.records.update(up, **fields)
        outcome = Outcome(
            up.identity,
            status,
            target.describe() if target else None,
            attachment_id,
            size,
            error.code if error else None,
            message,
        )
        details = error.details if isinstance(error, VendorError) and error.details else None
        log = logger.info if status in (r.ATTACHED, r.SKIPPED) else logger.warning
        log(
            "transfer finished",
            extra={
                "key": up.key,
                "version_id": up.version_id,
                "target": outcome.target,
                "attachment_id": attachment_id,
                "bytes": size,
                "duration_ms": round((self.clock() - started) * 1000),
                "outcome": status,
                "error_code": outcome.error_code,
                "error": message,
                "vendor_details": details,
            },
        )
        metrics.add_metric(name=f"Uploads{status.capitalize()}", unit=MetricUnit.Count, value=1)
        if status == r.ATTACHED:
            metrics.add_metric(name="BytesRelayed", unit=MetricUnit.Bytes, value=size)
        return asdict(outcome)


def build_itwin_relay(
    settings: Settings | None = None,
    *,
    s3_client: Any = None,
    dynamodb_client: Any = None,
    **client_options: Any,
) -> ItwinRelay:
    """Wire the flow from the environment, once per container."""
    settings = settings or Settings.load()
    dynamodb = dynamodb_client or boto3.client("dynamodb")
    return ItwinRelay(
        settings=settings,
        objects=ObjectStore(s3_client or boto3.client("s3")),
        itwin=itwin_client(settings, **client_options),
        records=TransferRecords(settings.require("transfers_table"), dynamodb),
        persistence=DynamoDBPersistenceLayer(table_name=settings.require("idempotency_table"), boto3_client=dynamodb),
        max_receive_count=settings.max_receive_count,
    )
