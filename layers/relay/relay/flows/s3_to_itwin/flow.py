"""The S3 → iTwin flow: one upload becomes exactly one attachment, resumably, with a visible outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.serialization.dataclass import DataclassSerializer

from relay.aws.s3events import IDEMPOTENCY_KEY, Upload, parse_message
from relay.aws.s3objects import ObjectInfo, ObjectStore
from relay.aws.transfers import Status, Step, TransferRecord, TransferRecords
from relay.errors import (
    ClaimConflictError,
    InvalidUploadError,
    MalformedMessageError,
    MissingLocationError,
    NotFoundError,
    ObjectGoneError,
    ObjectStoreError,
    Outcome,
    RelayError,
    SupersededError,
    UnexpectedStatusError,
    UnresolvedCreateError,
    UnsafeLocationError,
    VendorError,
    outcome_of,
)
from relay.flows.s3_to_itwin.targets import ItwinTarget, parse_target
from relay.observability import logger, metrics
from relay.settings import Settings
from relay.transport.retry import Deadline, post_once
from relay.vendors.factory import itwin_client
from relay.vendors.itwin import CreatedAttachment, ITwinClient, usable_id

IDEMPOTENCY_EXPIRY = 7 * 24 * 3600
# The outcome statuses that a user sees for each error outcome (RETRY becomes FAILED on the last delivery).
_FINAL_STATUS = {Outcome.REJECTED: Status.REJECTED, Outcome.FAILED: Status.FAILED, Outcome.RETRY: Status.FAILED}


@dataclass(frozen=True)
class TransferOutcome:
    """What became of one upload; Powertools stores it (DataclassSerializer) when it is final."""

    upload: str
    status: str
    target: str | None = None
    attachment_id: str | None = None
    bytes: int = 0
    error_code: str | None = None
    message: str | None = None


class NotFinalError(Exception):
    """Carries a skipped or to-be-retried outcome out of the idempotent function, so Powertools forgets it.

    Only attached, rejected and failed are remembered: a remembered skip would swallow the real upload
    that follows it, and a remembered DLQ failure would make a redrive do nothing.
    """

    def __init__(self, outcome: TransferOutcome, cause: BaseException | None = None, *, retry: bool) -> None:
        super().__init__(outcome.error_code or outcome.status)
        self.outcome = outcome
        self.cause = cause
        self.retry = retry


class RetryLaterError(RelayError):
    """Raised to the batch processor: the message returns to the queue; the record keeps the step reached."""

    code = "RetryLater"
    outcome = Outcome.RETRY

    def __str__(self) -> str:
        return self.message  # already "<cause's code>: <cause's text>"


@dataclass
class _Attempt:
    """One attempt at one upload: what it knows so far, for concluding it whatever happens."""

    upload: Upload
    started: float
    final_delivery: bool
    target: ItwinTarget | None = None
    info: ObjectInfo | None = None
    created: CreatedAttachment | None = None
    # The file reached iTwin: from here on nothing may delete the attachment, whatever fails after.
    uploaded: bool = False
    # A create's answer was lost and its metadata not found: the record must name it, never forget it.
    unresolved_create: str | None = None

    def outcome(self, status: Status, error: BaseException | None = None) -> TransferOutcome:
        return TransferOutcome(
            upload=self.upload.identity,
            status=status,
            target=self.target.describe() if self.target else None,
            attachment_id=self.created.attachment_id if self.created and status == Status.ATTACHED else None,
            bytes=self.info.size if self.info else 0,
            error_code=_code(error),
            message=_message(error),
        )


def _is_candidate(listed: dict[str, Any], target: ItwinTarget, info: ObjectInfo | None) -> bool:
    """A file-less attachment with this upload's name, and (when known) its caption and binding."""
    if listed.get("fileName") != target.file_name or listed.get("size") or not usable_id(listed.get("id")):
        return False
    if info is None:
        return True
    # Two versions of one key may differ in caption or binding: never take the other's metadata.
    return all((listed.get(name) or None) == (info.metadata.get(name) or None) for name in ("caption", "binding"))


def _code(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return error.code if isinstance(error, RelayError) else "InternalError"


def _message(error: BaseException | None) -> str | None:
    if error is None:
        return None
    # An unexpected exception's text is not ours to store: it may quote anything. Its traceback is logged.
    text = str(error) if isinstance(error, RelayError) else f"unexpected {type(error).__name__}"
    return text[:1000]


class S3ToItwinFlow:
    """Every collaborator is injected; `build_s3_to_itwin` wires them from the environment."""

    def __init__(
        self,
        *,
        settings: Settings,
        objects: ObjectStore,
        itwin: ITwinClient,
        records: TransferRecords,
        persistence: BasePersistenceLayer | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.objects = objects
        self.itwin = itwin
        self.records = records
        self.clock = clock
        self.idempotency = IdempotencyConfig(
            # The etag is fixed for a version, so it adds nothing on versioned buckets and names the upload on others.
            event_key_jmespath=IDEMPOTENCY_KEY,
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_EXPIRY,
        )
        self._once: Callable[..., TransferOutcome] = (
            idempotent_function(
                self._relay_upload,
                data_keyword_argument="upload",
                persistence_store=persistence,
                config=self.idempotency,
                output_serializer=DataclassSerializer(TransferOutcome),
            )
            if persistence is not None
            else self._relay_upload
        )

    # -- the batch side -------------------------------------------------------------------------

    def handle_record(self, record: SQSRecord, lambda_context: Any = None) -> list[TransferOutcome]:
        """One SQS record; raises when it must come back to the queue."""
        if lambda_context is not None:
            self.start_invocation(lambda_context)
        receive_count = int(record.attributes.approximate_receive_count or 1)
        with logger.append_context_keys(message_id=record.message_id):
            return self.handle_message(record.message_id, record.body, receive_count)

    def start_invocation(self, context: Any) -> None:
        """Per invocation: retries must not outlive it, and idempotency locks expire with it."""
        self.idempotency.register_lambda_context(context)
        self.itwin.use_deadline(Deadline.from_context(context))

    def handle_message(self, message_id: str, body: str, receive_count: int = 1) -> list[TransferOutcome]:
        """Relay every upload in one SQS message, then raise RetryLaterError if any of them must come back."""
        try:
            notification = parse_message(body)
        except RelayError as error:
            logger.error("malformed message", extra={"message_id": message_id, "error": str(error)})
            raise
        if notification.test_event:
            logger.info("skipping s3:TestEvent", extra={"message_id": message_id})
        for reason in notification.ignored:
            logger.warning(
                "ignoring a record that is not an upload", extra={"message_id": message_id, "reason": reason}
            )
        final = self.settings.max_receive_count is not None and receive_count >= self.settings.max_receive_count
        results: list[TransferOutcome] = []
        retry: BaseException | None = None
        for upload in notification.uploads:
            try:
                results.append(self._once(upload=upload, final_delivery=final))
            except NotFinalError as not_final:
                results.append(not_final.outcome)
                if not_final.retry:
                    retry = not_final.cause or not_final
            except IdempotencyAlreadyInProgressError as busy:
                logger.info("another invocation is relaying this upload", extra={"upload": upload.identity})
                retry = busy
            except Exception as error:  # noqa: BLE001 - the catch-all: never lose an upload to a surprise
                logger.exception("relaying an upload failed unexpectedly", extra={"upload": upload.identity})
                retry = error
                if final:
                    self._tag_failed_anyway(upload, error)
        if notification.malformed:
            # The good records are relayed (and remembered); the message returns, and ends in the DLQ, for these.
            logger.error("malformed records", extra={"message_id": message_id, "errors": notification.malformed})
            raise MalformedMessageError("; ".join(notification.malformed))
        if retry is not None:
            raise RetryLaterError(_message(retry) or "", code=_code(retry)) from retry
        return results

    def _tag_failed_anyway(self, upload: Upload, error: BaseException) -> None:
        """The last delivery failed before an outcome was written (the table is down): tag it, at least."""
        try:
            self.objects.tag(upload, Status.FAILED, None, _code(error))
        except Exception:  # noqa: BLE001 - best effort; the log line above says what happened
            logger.exception("could not tag a failed upload on its last delivery", extra={"upload": upload.identity})

    # -- one upload -----------------------------------------------------------------------------

    def _relay_upload(self, upload: Upload, final_delivery: bool = False) -> TransferOutcome:
        attempt = _Attempt(upload, self.clock(), final_delivery)
        try:
            attempt.target = parse_target(upload.key)
        except RelayError as error:
            self.records.begin(upload, None, None)
            return self._conclude(attempt, error)
        record = self.records.begin(upload, attempt.target.describe(), attempt.target.file_name)
        if record.step == Step.DONE and record.status == Status.ATTACHED:
            attempt.created = CreatedAttachment(record.attachment_id or "", record.location or "")
            return attempt.outcome(Status.ATTACHED)
        try:
            if record.step == Step.UPLOADED and record.attachment_id and record.location:
                # The file was delivered by an earlier attempt: only the tag and the record are left.
                attempt.uploaded = True
                attempt.created = CreatedAttachment(record.attachment_id, record.location)
                return self._attached(attempt, attempt.created)
            attempt.info = info = self._inspect(upload)
            attempt.created = created = self._ensure_created(attempt, attempt.target, info, record)
            self.itwin.upload(
                created.location, lambda: self.objects.open(upload, info.size), info.size, info.content_type
            )
            attempt.uploaded = True
            self.records.update(upload, step=Step.UPLOADED, bytes=info.size)
            return self._attached(attempt, created)
        except Exception as error:  # noqa: BLE001 - every failure, expected or not, gets an outcome
            return self._conclude(attempt, error)

    def _inspect(self, upload: Upload) -> ObjectInfo:
        """HEAD the object and refuse, before any vendor call, what can never become an attachment."""
        info = self.objects.head(upload)
        if upload.version_id is None and upload.etag and info.etag and info.etag != upload.etag:
            raise SupersededError("the object was overwritten before it was processed")
        limit = self.settings.max_upload_bytes
        if info.size > limit:
            raise InvalidUploadError(f"{info.size} bytes is over the {limit} byte limit", code="RequestTooLarge")
        if info.size == 0:
            raise InvalidUploadError("the object is empty; iTwin attachments need a file", code="EmptyFile")
        return info

    def _ensure_created(
        self, attempt: _Attempt, target: ItwinTarget, info: ObjectInfo, record: TransferRecord
    ) -> CreatedAttachment:
        up = attempt.upload
        if record.step in (Step.CREATED, Step.UPLOADED) and record.location and record.attachment_id:
            return CreatedAttachment(record.attachment_id, record.location)  # resume: never a second POST
        if record.step == Step.CREATING:
            adopted = self._adopt(up, target, info)
            if adopted is not None:
                return self._record_created(up, adopted, record)
        self.records.update(up, step=Step.CREATING)
        try:
            created, was_adopted = self._create(attempt, target, info)
            if was_adopted:
                return self._record_created(up, created, record)
        except (MissingLocationError, UnsafeLocationError, UnexpectedStatusError) as error:
            # The metadata may exist while the answer is unusable (no Location, a hostile one, a redirect): find
            # it as a lost answer would be, so that concluding deletes it (never by an id read from the answer).
            try:
                attempt.created = self._adopt(up, target, info)
            except UnresolvedCreateError as unresolved:
                attempt.unresolved_create = str(unresolved)[:1000]
            if attempt.created is None and attempt.unresolved_create is None:
                attempt.unresolved_create = (
                    f"the create was answered unusably ({error.code}) and no file-less {target.file_name!r} was "
                    f"found under {target.describe()}: if one appears, it is this upload's orphan"
                )
            raise
        if created.attachment_id is None:
            # A Location on another allowed host need not name the id: find the metadata as a lost answer would.
            found = self._adopt(up, target, info)
            if found is None:
                raise UnresolvedCreateError("the create's Location names no attachment id, and listing found none")
            return self._record_created(up, CreatedAttachment(found.attachment_id, created.location), record)
        if not self.records.claim(target.claim_key(created.attachment_id), up):
            # Another upload's adoption took it between our POST and our claim; theirs may now be ours.
            adopted = self._adopt(up, target, info)
            if adopted is None:
                raise ClaimConflictError(f"attachment {created.attachment_id} was claimed by another upload")
            created = adopted
        return self._record_created(up, created, record)

    def _create(self, attempt: _Attempt, target: ItwinTarget, info: ObjectInfo) -> tuple[CreatedAttachment, bool]:
        """POST the metadata; True beside it when it was adopted. After an ambiguous failure, look for it
        before anyone POSTs again.

        A 500 (or 502, 504) was an answer: the server is done with the request, so when the listing finds
        nothing the POST is sent again, after the policy's wait. A lost answer may still be at work: with
        nothing found, the create stays unresolved and the message comes back.
        """
        try:
            return post_once(
                lambda: self.itwin.create_attachment(
                    target.kind,
                    target.parent_id,
                    target.file_name,
                    info.metadata.get("caption"),
                    info.metadata.get("binding"),
                ),
                lambda: self._adopt(attempt.upload, target, info),
                self.itwin.pause,
            )
        except VendorError as error:
            if error.ambiguous:
                attempt.unresolved_create = (
                    f"a create's answer was lost or failed ({error.code}) and no file-less {target.file_name!r} "
                    f"was found under {target.describe()}: if one appears, it is this upload's orphan"
                )
            raise

    def _record_created(self, up: Upload, created: CreatedAttachment, record: TransferRecord) -> CreatedAttachment:
        self.records.update(up, step=Step.CREATED, attachment_id=created.attachment_id, location=created.location)
        record.step = Step.CREATED
        return created

    def _adopt(self, up: Upload, target: ItwinTarget, info: ObjectInfo | None = None) -> CreatedAttachment | None:
        """Take the metadata an interrupted create made, without trusting anyone's clock.

        The rule: a candidate has this upload's file name and no file yet, and no other upload has claimed
        it. The claim is a conditional write, so two uploads can never take the same one. A listing that
        fails part-way still offers what it listed; with nothing to take, the create stays unresolved and
        comes back, rather than being repeated blind.
        """
        candidates: list[dict[str, Any]] = []
        listing_error: RelayError | None = None
        try:
            for a in self.itwin.list_attachments(target.kind, target.parent_id):
                if _is_candidate(a, target, info):
                    candidates.append(a)
        except (VendorError, UnsafeLocationError) as error:
            # The listing's own answer failed (an HTML 200, a next link on another host). A token or
            # configuration error is not the listing's: it propagates as itself.
            listing_error = error
        candidates.sort(key=lambda a: (str(a.get("createdDateTime")), str(a["id"])))
        for candidate in candidates:
            attachment_id = str(candidate["id"])
            if self.records.claim(target.claim_key(attachment_id), up):
                others = [str(a["id"]) for a in candidates if a is not candidate]
                if others:
                    # Not ours to delete: each may be another upload's, between its create and its claim.
                    self.records.update(up, suspected_orphans=others)
                logger.info("adopted attachment from an interrupted create", extra={"attachment_id": attachment_id})
                return CreatedAttachment(
                    attachment_id, self.itwin.attachment_url(target.kind, target.parent_id, attachment_id)
                )
        if listing_error is not None:
            raise UnresolvedCreateError(
                f"a create may have landed, and the listing to find it failed: {listing_error}"
            ) from listing_error
        return None

    # -- outcomes -------------------------------------------------------------------------------

    def _attached(self, attempt: _Attempt, created: CreatedAttachment) -> TransferOutcome:
        outcome = attempt.outcome(Status.ATTACHED)
        self._tag(attempt, outcome)
        fields: dict[str, Any] = {"error_code": None, "error_message": None}
        if attempt.info is not None:  # a resumed attempt did not HEAD again: keep the bytes recorded then
            fields["bytes"] = outcome.bytes
        self.records.update(
            attempt.upload, step=Step.DONE, status=Status.ATTACHED, attachment_id=outcome.attachment_id, **fields
        )
        self._report(attempt, outcome, None)
        metrics.add_metric(name="BytesRelayed", unit=MetricUnit.Bytes, value=outcome.bytes)
        return outcome

    def _conclude(self, attempt: _Attempt, error: BaseException) -> TransferOutcome:
        """The one place an error becomes an outcome: retry, skip, or a final tag and record."""
        outcome = outcome_of(error)
        if not isinstance(error, RelayError):
            logger.error("unexpected error in a transfer", exc_info=error, extra={"upload": attempt.upload.identity})
        if attempt.uploaded:
            return self._delivered_despite(attempt, error, outcome)
        if outcome is Outcome.RETRY and not attempt.final_delivery:
            result = attempt.outcome(Status.RETRYING, error)
            self.records.update(
                attempt.upload, status=Status.RETRYING, error_code=result.error_code, error_message=result.message
            )
            self._report(attempt, result, error)
            raise NotFinalError(result, error, retry=True)
        self._discard(attempt)
        if outcome is Outcome.SKIPPED:
            result = attempt.outcome(Status.SKIPPED, error)
            self.records.update(attempt.upload, status=Status.SKIPPED, error_code=result.error_code)
            self._report(attempt, result, error)
            raise NotFinalError(result, error, retry=False)
        result = attempt.outcome(_FINAL_STATUS[outcome], error)
        if attempt.unresolved_create or isinstance(error, UnresolvedCreateError):
            self.records.update(attempt.upload, orphan_suspected=attempt.unresolved_create or result.message)
        self._tag(attempt, result)
        self.records.update(
            attempt.upload,
            status=result.status,
            attachment_id=None,
            error_code=result.error_code,
            error_message=result.message,
            bytes=result.bytes,
        )
        self._report(attempt, result, error)
        if outcome is Outcome.RETRY:
            # Last delivery: visibly failed, and on to the DLQ, where a redrive processes it again.
            raise NotFinalError(result, error, retry=True)
        return result

    def _delivered_despite(self, attempt: _Attempt, error: BaseException, outcome: Outcome) -> TransferOutcome:
        """The file is in iTwin and tagging or recording failed: retry for those, never delete the attachment."""
        if outcome is Outcome.RETRY and not attempt.final_delivery:
            result = attempt.outcome(Status.RETRYING, error)
            self._report(attempt, result, error)
            raise NotFinalError(result, error, retry=True)
        logger.warning(
            "attached, but the outcome could not be fully written",
            extra={"upload": attempt.upload.identity, "error_code": _code(error), "error": _message(error)},
        )
        result = attempt.outcome(Status.ATTACHED)
        try:
            self.records.update(
                attempt.upload, step=Step.DONE, status=Status.ATTACHED, attachment_id=result.attachment_id
            )
        except RelayError:
            logger.exception("the record could not be written", extra={"upload": attempt.upload.identity})
        return result

    def _tag(self, attempt: _Attempt, result: TransferOutcome) -> None:
        """Tag the object with the outcome; a tag that fails is retried, except where retrying cannot help."""
        try:
            self.objects.tag(attempt.upload, result.status, result.attachment_id, result.error_code)
        except ObjectGoneError:
            pass
        except ObjectStoreError as error:
            if attempt.target is not None and not attempt.final_delivery:
                raise  # a retry resumes at tagging
            # Outside issues/ and forms/ the role may not tag (IAM names those prefixes), and the last
            # delivery has no retry left: the record carries the outcome, and says the tag is missing.
            logger.warning("could not tag the object; the record holds the outcome", extra={"error": str(error)})
            self.records.update(attempt.upload, tag_error=error.code)

    def _discard(self, attempt: _Attempt) -> None:
        """A file that will never arrive must leave no metadata behind."""
        created, target = attempt.created, attempt.target
        if created is None or created.attachment_id is None or target is None:
            return
        attempt.created = None
        if self._delete_quietly(target, created.attachment_id):
            self.records.update(attempt.upload, step=Step.RECEIVED, remove=("attachment_id", "location"))
        else:
            self.records.update(attempt.upload, orphan_attachment_id=created.attachment_id)

    def _delete_quietly(self, target: ItwinTarget, attachment_id: str) -> bool:
        try:
            self.itwin.delete_attachment(target.kind, target.parent_id, attachment_id)
            return True
        except NotFoundError:
            return True
        except Exception as error:  # noqa: BLE001 - a failed cleanup is recorded, never raised over the outcome
            logger.error(
                "could not delete metadata of a failed upload",
                extra={"attachment_id": attachment_id, "error": _message(error)},
            )
            return False

    def _report(self, attempt: _Attempt, outcome: TransferOutcome, error: BaseException | None) -> None:
        """The one structured line per transfer attempt, and its metric."""
        details = error.details if isinstance(error, VendorError) and error.details else None
        log = logger.info if outcome.status in (Status.ATTACHED, Status.SKIPPED) else logger.warning
        log(
            "transfer finished" if outcome.status != Status.RETRYING else "transfer will be retried",
            extra={
                "key": attempt.upload.key,
                "version_id": attempt.upload.version_id,
                "target": outcome.target,
                "attachment_id": outcome.attachment_id,
                "bytes": outcome.bytes,
                "duration_ms": round((self.clock() - attempt.started) * 1000),
                "outcome": outcome.status,
                "error_code": outcome.error_code,
                "error": outcome.message,
                "vendor_details": details,
            },
        )
        metrics.add_metric(name=f"Uploads{outcome.status.capitalize()}", unit=MetricUnit.Count, value=1)


def build_s3_to_itwin(
    settings: Settings | None = None,
    *,
    s3_client: Any = None,
    dynamodb_client: Any = None,
    objects: ObjectStore | None = None,
    itwin: ITwinClient | None = None,
    **client_options: Any,
) -> S3ToItwinFlow:
    """Wire the flow from the environment, once per container; tests pass their own collaborators."""
    settings = settings or Settings.load()
    if settings.max_receive_count is None:
        # Without it no delivery is the last: a failing upload reaches the DLQ untagged.
        logger.warning("RELAY_MAX_RECEIVE_COUNT is not set; failures will reach the DLQ without a failed tag")
    dynamodb = dynamodb_client or boto3.client("dynamodb")
    return S3ToItwinFlow(
        settings=settings,
        objects=objects or ObjectStore(s3_client or boto3.client("s3")),
        itwin=itwin or itwin_client(settings, **client_options),
        records=TransferRecords(settings.require("transfers_table"), dynamodb),
        persistence=DynamoDBPersistenceLayer(table_name=settings.require("idempotency_table"), boto3_client=dynamodb),
    )
