"""What the API decides: listings with their archive state, a file handed out as a URL, archive jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import boto3
from botocore.config import Config

from relay.aws.archive import ArchivedCopy
from relay.aws.jobs import ArchiveJob, ArchiveJobs, Result
from relay.aws.queues import WorkQueue
from relay.errors import (
    ArchiveJobNotFoundError,
    CopyTimedOutError,
    InvalidInputError,
    MalformedResponseError,
    QueueError,
)
from relay.flows.archive import Archiver, ArchiveRequest, AttachmentInfo, archive_jobs, archive_store
from relay.observability import logger
from relay.segments import segment_problem
from relay.settings import Settings
from relay.transport.retry import Deadline
from relay.vendors.factory import itwin_client
from relay.vendors.itwin import ITwinClient, Kind

MAX_ID = 128
# Seconds of a request kept back from copying (API Gateway cuts at 29 s): the deadline is checked between
# chunks, so a stalled read (RELAY_HTTP_READ_TIMEOUT, 5 s for the API) and the copy from staging come after it.
ANSWER_MARGIN = 12.0
COPY_RETRY_AFTER = 10


def check_id(field: str, raw: str) -> str:
    """The id a path segment names, decoded, under the upload keys' rules (relay.segments): an issue one can
    upload into is one the API reaches. API Gateway REST hands the Lambda the path still percent-encoded
    (its `pathParameters` are decoded), and the resolver routes on the path."""
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{field} is not valid percent-encoded UTF-8", field=field) from None
    problem = segment_problem(value, field, MAX_ID)
    if problem is not None:
        raise InvalidInputError(problem[1], field=field)
    return value


@dataclass(frozen=True)
class Link:
    copy: ArchivedCopy
    url: str
    expires_at: str


@dataclass(frozen=True)
class Pending:
    key: str
    retry_after: int


class AttachmentsService:
    def __init__(
        self,
        settings: Settings,
        archiver: Archiver,
        jobs: ArchiveJobs,
        queue: WorkQueue,
        *,
        presigner: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.archiver = archiver
        self.jobs = jobs
        self.queue = queue
        self.presigner = presigner
        self.clock = clock
        # The S3 listing runs beside iTwin's: a listing costs the slower of the two, not their sum.
        self._beside = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay-api")

    @property
    def itwin(self) -> ITwinClient:
        return self.archiver.itwin

    def start_request(self, context: Any) -> None:
        self.itwin.use_deadline(Deadline.from_context(context))

    def _infos(self, kind: Kind, parent_id: str) -> list[AttachmentInfo]:
        """The listing's usable attachments. One with an id that cannot be a key segment (a slash, a control
        character, over 128 characters) is left out and logged: it must not block the parent's listing."""
        infos = []
        for item in self.itwin.list_attachments(kind, parent_id):
            try:
                infos.append(AttachmentInfo.from_itwin(item))
            except MalformedResponseError as error:
                logger.warning("unusable attachment left out", extra={"parent": parent_id, "error": error.message})
        return infos

    def attachments(self, kind: Kind, parent_id: str) -> list[dict[str, Any]]:
        """Every attachment (all pages), each with `archived` and, when it is, `archiveKey`."""
        copies = self._beside.submit(self.archiver.store.copies, kind, parent_id)
        infos = self._infos(kind, parent_id)  # iTwin's error wins: the listing is what was asked for
        archived = copies.result()
        listed = []
        for info in infos:
            key = self.archiver.key(kind, parent_id, info)
            current = key in archived and info.size is not None and archived[key] == info.size
            listed.append({**info.as_dict(), "archived": current, "archiveKey": key if current else None})
        return listed

    def file(
        self, kind: Kind, parent_id: str, attachment_id: str, remaining: Callable[[], float | None]
    ) -> Link | Pending:
        """A pre-signed URL of a current copy, made now when it fits in the time left, else queued.

        `remaining` is read when the copy starts, after the listing and the HEAD have taken their time."""
        info = AttachmentInfo.from_itwin(self.itwin.find_attachment(kind, parent_id, attachment_id))
        copy = self.archiver.current(kind, parent_id, info)
        if copy is None:
            budget, left = self.settings.api_copy_seconds, remaining()
            if left is not None:
                budget = min(budget, left - ANSWER_MARGIN)
            try:
                if budget <= 0:
                    raise CopyTimedOutError("no time left in this request to copy")
                copy = self.archiver.ensure(
                    kind, parent_id, info, deadline=self.clock() + budget, clock=self.clock
                ).copy
            except CopyTimedOutError as timed_out:
                logger.info("copy handed to the archive queue", extra={"attachment": info.id, "why": timed_out.message})
                self.queue.send([ArchiveRequest(kind, parent_id, info).body()])
                return Pending(self.archiver.key(kind, parent_id, info), COPY_RETRY_AFTER)
        expiry = self.settings.presign_expiry_seconds
        url = self.archiver.store.presign(copy, expiry, info.fileName, self.presigner)
        expires = datetime.now(UTC) + timedelta(seconds=expiry)
        return Link(copy, url, expires.isoformat(timespec="seconds").replace("+00:00", "Z"))

    def archive(self, kind: Kind, parent_id: str) -> tuple[ArchiveJob, bool]:
        """Start archiving every attachment of the parent, or return the job already running for it."""
        running = self.jobs.running(kind, parent_id)
        if running is not None:
            return running, False
        # One count per attachment id: a listing that named one twice would leave the job a count short forever.
        first: dict[str, AttachmentInfo] = {}
        for info in self._infos(kind, parent_id):
            first.setdefault(info.id, info)
        infos = list(first.values())
        job, created = self.jobs.start(kind, parent_id, len(infos))
        if not created or not infos:
            return job, created
        try:
            self.queue.send([ArchiveRequest(kind, parent_id, info, job.job_id).body() for info in infos])
        except QueueError as error:
            # What did not reach the queue is counted failed, so the job still ends and frees the parent.
            logger.error("archive requests not queued", extra={"job": job.job_id, "unsent": len(error.unsent)})
            for body in error.unsent:
                self.jobs.record(job.job_id, body["attachment"]["id"], Result.FAILED, error.code, error.message)
            job = self.jobs.get(job.job_id) or job
        return job, True

    def job(self, job_id: str) -> ArchiveJob:
        job = self.jobs.view(job_id)
        if job is None:
            raise ArchiveJobNotFoundError(f"no archive job {job_id!r} (jobs are kept 30 days)")
        return job


def build_attachments_api(
    settings: Settings | None = None,
    *,
    s3_client: Any = None,
    dynamodb_client: Any = None,
    sqs_client: Any = None,
    itwin: ITwinClient | None = None,
    **client_options: Any,
) -> AttachmentsService:
    """Wire the service from the environment, once per container; tests pass their own collaborators."""
    settings = settings or Settings.load()
    s3 = s3_client or boto3.client("s3", config=Config(signature_version="s3v4"))
    return AttachmentsService(
        settings,
        Archiver(itwin or itwin_client(settings, **client_options), archive_store(settings, s3)),
        archive_jobs(settings, dynamodb_client),
        WorkQueue(sqs_client or boto3.client("sqs"), settings.require("archive_queue_url")),
    )


_service: AttachmentsService | None = None


def service() -> AttachmentsService:
    """The container's service, built on first use (the OpenAPI route needs none); tests set their own."""
    global _service
    if _service is None:
        _service = build_attachments_api()
    return _service


def use_service(replacement: AttachmentsService | None) -> None:
    global _service
    _service = replacement
