"""The archive worker: each queued request becomes one current copy in S3, and is counted once in its job."""

from __future__ import annotations

import time
from typing import Any

import boto3
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from relay.aws.archive import ArchiveStore
from relay.aws.deliveries import FAILURE_RECORD_SECONDS, WebhookDeliveries
from relay.aws.jobs import ArchiveJobs, Result
from relay.errors import Outcome, RelayError, outcome_of, redact
from relay.flows.archive.archiver import Archiver, ArchiveRequest, AttachmentInfo
from relay.observability import logger, metrics
from relay.settings import Settings
from relay.transport.retry import Deadline
from relay.vendors.factory import itwin_client
from relay.vendors.itwin import ITwinClient

# Seconds of the invocation kept for abandoning a copy and counting its outcome.
COUNT_MARGIN = 20.0


class ArchiveFlow:
    def __init__(
        self, settings: Settings, archiver: Archiver, jobs: ArchiveJobs, deliveries: WebhookDeliveries | None = None
    ) -> None:
        self.settings = settings
        self.archiver = archiver
        self.jobs = jobs
        self.deliveries = deliveries  # where a webhook's failed archive is recorded (it has no job)

    def handle_record(self, record: SQSRecord, context: Any) -> Result:
        """Archive one request. A retryable failure raises (the message returns to the queue) until the last
        delivery; then, like every other failure, it is counted `failed` with its code and the message is done."""
        deadline = Deadline.from_context(context)
        self.archiver.itwin.use_deadline(deadline)
        request = ArchiveRequest.parse(record.body)
        receives = int(record.attributes.approximate_receive_count or 1)
        final = self.settings.max_receive_count is not None and receives >= self.settings.max_receive_count
        where = {"kind": request.kind, "parent": request.parent_id, "attachment": request.attachment_id}
        try:
            info = request.attachment or AttachmentInfo.from_itwin(
                self.archiver.itwin.find_attachment(request.kind, request.parent_id, request.attachment_id)
            )
            # A copy still streaming when Lambda's time runs out would be killed uncounted: stop it first
            # (CopyTimedOut, retried), leaving room to count the outcome.
            left = deadline.remaining()
            stop_at = None if left is None else time.monotonic() + max(0.0, left - COUNT_MARGIN)
            archived = self.archiver.ensure(request.kind, request.parent_id, info, deadline=stop_at)
        except Exception as error:
            outcome = outcome_of(error)
            code = error.code if isinstance(error, RelayError) else type(error).__name__
            details = {**where, "error": code, "receives": receives}
            if request.attachment is None:
                # A webhook's request (issue 7) has no job to count a failure in, and iTwin will not send the
                # event again: deleting the message would lose it. So it raises on every delivery, even when
                # the failure is final (404 AttachmentNotFound), and SQS moves it to ArchiveDeadLetterQueue
                # after MaxReceiveCount, where the DLQ alarm sees it and a redrive can replay it. The last
                # delivery also records it failed, with its code, in the webhook deliveries table.
                self._webhook_failed(request, error, code, receives, final)
                raise
            if outcome is Outcome.RETRY and not final:
                logger.warning("archive failed; the message goes back to the queue", extra=details)
                raise
            logger.error("archive failed", extra=details, exc_info=not isinstance(error, RelayError))
            metrics.add_metric(name="ArchivesFailed", unit="Count", value=1)
            self._count(request, Result.FAILED, code, redact(str(error)))
            return Result.FAILED
        result = Result.ARCHIVED if archived.copied else Result.SKIPPED
        logger.info("archived" if archived.copied else "already archived", extra={**where, "key": archived.copy.key})
        metrics.add_metric(name="ArchivesCopied" if archived.copied else "ArchivesSkipped", unit="Count", value=1)
        self._count(request, result)
        return result

    def _count(self, request: ArchiveRequest, result: Result, code: str = "", message: str = "") -> None:
        if request.job_id:
            self.jobs.record(request.job_id, request.attachment_id, result, code, message)
        elif request.attachment is None and self.deliveries is not None and result is not Result.FAILED:
            self.deliveries.record(
                archive_record_id(request), {"status": result.value, "receives": 0, "code": "", "message": ""}
            )

    def _webhook_failed(self, request: ArchiveRequest, error: Exception, code: str, receives: int, final: bool) -> None:
        details = {"kind": request.kind, "parent": request.parent_id, "attachment": request.attachment_id}
        if not final:
            logger.warning(
                "webhook archive failed; the message goes back to the queue",
                extra={**details, "error": code, "receives": receives},
            )
            return
        logger.error("webhook archive failed for good; the message goes to the DLQ", extra={**details, "error": code})
        metrics.add_metric(name="ArchivesFailed", unit="Count", value=1)
        if self.deliveries is not None:
            self.deliveries.record(
                archive_record_id(request),
                {"status": Result.FAILED.value, "code": code, "message": redact(str(error)), "receives": receives},
                keep_seconds=FAILURE_RECORD_SECONDS,
            )


def archive_record_id(request: ArchiveRequest) -> str:
    """The deliveries-table record of a webhook's archive: `archive#<kind>/<parentId>/<attachmentId>`."""
    return f"archive#{request.kind}/{request.parent_id}/{request.attachment_id}"


def archive_store(settings: Settings, s3_client: Any = None) -> ArchiveStore:
    return ArchiveStore(
        s3_client or boto3.client("s3"), settings.require("archive_bucket"), part_size=settings.archive_part_bytes
    )


def archive_jobs(settings: Settings, dynamodb_client: Any = None) -> ArchiveJobs:
    return ArchiveJobs(
        settings.require("archive_jobs_table"),
        dynamodb_client or boto3.client("dynamodb"),
        stale_after=settings.archive_job_stale_seconds,
    )


def build_archive(
    settings: Settings | None = None,
    *,
    s3_client: Any = None,
    dynamodb_client: Any = None,
    itwin: ITwinClient | None = None,
    **client_options: Any,
) -> ArchiveFlow:
    """Wire the worker from the environment, once per container; tests pass their own collaborators."""
    settings = settings or Settings.load()
    if settings.max_receive_count is None:
        logger.warning("RELAY_MAX_RECEIVE_COUNT is not set; a failing archive reaches the DLQ uncounted")
    dynamodb = dynamodb_client or boto3.client("dynamodb")
    deliveries = (
        WebhookDeliveries(settings.webhook_deliveries_table, dynamodb, ttl_seconds=settings.webhook_dedupe_seconds)
        if settings.webhook_deliveries_table
        else None
    )
    return ArchiveFlow(
        settings,
        Archiver(itwin or itwin_client(settings, **client_options), archive_store(settings, s3_client)),
        archive_jobs(settings, dynamodb),
        deliveries,
    )
