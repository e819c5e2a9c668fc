"""The S3 → RFI flow: one upload becomes one DM storage object, one item version and one RFI attachment, resumably."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
from botocore.config import Config

from relay.aws.s3events import IDEMPOTENCY_KEY, Upload, parse_message
from relay.aws.s3objects import ObjectInfo, ObjectStore
from relay.aws.transfers import Status, Step, TransferRecord, TransferRecords
from relay.errors import (
    ApsLoginRequiredError,
    AuthenticationError,
    InvalidRequestError,
    InvalidUploadError,
    MalformedMessageError,
    NotBim360ProjectError,
    NotFoundError,
    ObjectGoneError,
    ObjectStoreError,
    Outcome,
    PermissionDeniedError,
    RelayError,
    ServerError,
    StepFailedError,
    SupersededError,
    TooLargeError,
    UnresolvedCreateError,
    VendorError,
    outcome_of,
)
from relay.flows.s3_to_itwin.flow import NotFinalError, RetryLaterError, TransferOutcome
from relay.flows.s3_to_rfi.targets import RfiTarget, parse_target
from relay.observability import logger, metrics
from relay.settings import Settings
from relay.transport.retry import Deadline, post_once
from relay.vendors.aps import ApsClient, FolderItem, StorageObject
from relay.vendors.factory import aps_client

IDEMPOTENCY_EXPIRY = 7 * 24 * 3600
T = TypeVar("T")
_FINAL_STATUS = {Outcome.REJECTED: Status.REJECTED, Outcome.FAILED: Status.FAILED, Outcome.RETRY: Status.FAILED}
TAG_DM_ITEM = "relay-dm-item"
# A folder setting that is already a folder id is used as it is; anything else is a top folder's name.
FOLDER_ID_PREFIX = "urn:adsk.wipprod:fs.folder:"
# Rounds of list-then-act for the item: a 409 (someone else made the name) or a 500 after the POST lists again.
ITEM_ROUNDS = 3
# The record's fields, one per step reached (the shared Step column says how far, coarsely).
F_STORAGE, F_UPLOAD_KEY, F_PARTS = "storage_object_id", "upload_key", "parts_done"
# The part size the recorded parts were cut with: a resume after a redeploy that changed RELAY_APS_PART_BYTES
# must cut the missing parts the same way, or the assembled file would be corrupt.
F_PART_BYTES = "part_bytes"
F_COMPLETED, F_ITEM, F_VERSION, F_RFI_ATTACHMENT = "completed", "item_id", "version_id", "rfi_attachment_id"


@dataclass(frozen=True)
class Project:
    """What one BIM 360 project resolves to: its RFI container and the target folder."""

    container_id: str
    folder_id: str


@dataclass
class _Attempt:
    upload: Upload
    started: float
    final_delivery: bool
    target: RfiTarget | None = None
    info: ObjectInfo | None = None
    item_id: str | None = None
    version_id: str | None = None
    rfi_attachment_id: str | None = None
    parts: set[int] = field(default_factory=set)
    # A complete refused as spent (400): an earlier one may have landed. The item step tells: DM refuses an
    # item or version on an object never completed, and then this error, the complete's, is the one reported.
    complete_doubt: InvalidRequestError | None = None

    def outcome(self, status: Status, error: BaseException | None = None) -> TransferOutcome:
        return TransferOutcome(
            upload=self.upload.identity,
            status=status,
            target=self.target.describe() if self.target else None,
            attachment_id=self.rfi_attachment_id if status == Status.ATTACHED else None,
            bytes=self.info.size if self.info else 0,
            error_code=_code(error),
            message=_message(error),
        )


def _code(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return error.code if isinstance(error, RelayError) else "InternalError"


def _message(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = str(error) if isinstance(error, RelayError) else f"unexpected {type(error).__name__}"
    return text[:1000]


def step_error(step: str, error: VendorError) -> RelayError:
    """What a vendor error at one step means for the upload; the message always names the step."""
    if isinstance(error, AuthenticationError):
        # Handlers never refresh: a refused token waits for the refresher or for someone to sign in again.
        return ApsLoginRequiredError(f"step {step}: APS refused the user token ({error.code})")
    if isinstance(error, PermissionDeniedError):
        return StepFailedError(f"step {step}: {error}", step=step, code="PermissionDenied")
    if isinstance(error, NotFoundError):
        code = "RfiNotFound" if step == "attach" else f"{step.capitalize()}NotFound"
        return StepFailedError(f"step {step}: {error}", step=step, code=code)
    if isinstance(error, InvalidRequestError) and not isinstance(error, TooLargeError):
        # The vendor refused this request for good (400, 409 after the rounds): failed, with its code.
        return StepFailedError(f"step {step}: {error}", step=step, code=error.code)
    return error


class S3ToRfiFlow:
    """Every collaborator is injected; `build_s3_to_rfi` wires them from the environment."""

    def __init__(
        self,
        *,
        settings: Settings,
        objects: ObjectStore,
        aps: ApsClient,
        records: TransferRecords,
        persistence: BasePersistenceLayer | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.objects = objects
        self.aps = aps
        self.records = records
        self.clock = clock
        self._projects: dict[tuple[str, str, str], Project] = {}
        self.idempotency = IdempotencyConfig(
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
        if lambda_context is not None:
            self.start_invocation(lambda_context)
        receive_count = int(record.attributes.approximate_receive_count or 1)
        with logger.append_context_keys(message_id=record.message_id):
            return self.handle_message(record.message_id, record.body, receive_count)

    def start_invocation(self, context: Any) -> None:
        self.idempotency.register_lambda_context(context)
        self.aps.use_deadline(Deadline.from_context(context))

    def handle_message(self, message_id: str, body: str, receive_count: int = 1) -> list[TransferOutcome]:
        """Relay every upload in one SQS message, then raise RetryLaterError if any of them must come back."""
        try:
            notification = parse_message(body)
        except RelayError as error:
            logger.error("malformed message", extra={"message_id": message_id, "error": str(error)})
            raise
        if notification.test_event:
            logger.info("skipping s3:TestEvent", extra={"message_id": message_id})
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
            except Exception as error:  # noqa: BLE001 - never lose an upload to a surprise
                logger.exception("relaying an upload failed unexpectedly", extra={"upload": upload.identity})
                retry = error
                if final:
                    self._tag_quietly(upload, Status.FAILED, None, _code(error), None)
        if notification.malformed:
            logger.error("malformed records", extra={"message_id": message_id, "errors": notification.malformed})
            raise MalformedMessageError("; ".join(notification.malformed))
        if retry is not None:
            raise RetryLaterError(_message(retry) or "", code=_code(retry)) from retry
        return results

    # -- one upload -----------------------------------------------------------------------------

    def _relay_upload(self, upload: Upload, final_delivery: bool = False) -> TransferOutcome:
        attempt = _Attempt(upload, self.clock(), final_delivery)
        try:
            attempt.target = parse_target(upload.key)
        except RelayError as error:
            self.records.begin(upload, None, None)
            return self._conclude(attempt, error)
        record = self.records.begin(upload, attempt.target.describe(), attempt.target.file_name)
        attempt.item_id, attempt.version_id = record.text(F_ITEM), record.text(F_VERSION)
        attempt.rfi_attachment_id = record.text(F_RFI_ATTACHMENT)
        if record.step == Step.DONE and record.status == Status.ATTACHED and attempt.rfi_attachment_id:
            return attempt.outcome(Status.ATTACHED)
        try:
            attempt.info = info = self._inspect(upload)
            target = attempt.target
            project = self._project(target.project_id)
            if attempt.version_id is None or attempt.item_id is None:
                obj = self._upload(attempt, target, project, info, record)
                self._ensure_version(attempt, target, project, obj)
            if attempt.rfi_attachment_id is None:
                self._ensure_attached(attempt, target, project)
            return self._attached(attempt)
        except Exception as error:  # noqa: BLE001 - every failure, expected or not, gets an outcome
            return self._conclude(attempt, error)

    def _inspect(self, upload: Upload) -> ObjectInfo:
        """HEAD the object and refuse, before any vendor call, what can never become an RFI attachment."""
        info = self.objects.head(upload)
        if upload.version_id is None and upload.etag and info.etag and info.etag != upload.etag:
            raise SupersededError("the object was overwritten before it was processed")
        limit = self.settings.aps_max_upload_bytes
        if info.size > limit:
            raise InvalidUploadError(f"{info.size} bytes is over the {limit} byte limit", code="RequestTooLarge")
        if info.size == 0:
            raise InvalidUploadError("the object is empty; an RFI attachment needs a file", code="EmptyFile")
        return info

    def _vendor(self, step: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except VendorError as error:
            raise step_error(step, error) from error

    def _project(self, project_id: str) -> Project:
        """The project's RFI container and target folder, looked up once per warm container."""
        hub = self.settings.require("aps_hub_id")
        folder_setting = self.settings.aps_folder
        key = (hub, project_id, folder_setting)
        cached = self._projects.get(key)
        if cached is not None:
            return cached
        try:
            container = self.aps.rfi_container_id(hub, project_id)
        except VendorError as error:
            if error.code == "NoRfiContainer":
                raise NotBim360ProjectError(f"project {project_id} has no RFI container (an ACC project?)") from None
            raise step_error("project", error) from error
        if folder_setting.startswith(FOLDER_ID_PREFIX):
            folder = folder_setting
        else:
            folders = self._vendor("folder", lambda: self.aps.top_folders(hub, project_id))
            match = [
                f
                for f in folders
                if folder_setting in ((f.get("attributes") or {}).get(n) for n in ("name", "displayName"))
            ]
            if not match:
                raise StepFailedError(
                    f"step folder: project {project_id} has no top folder named {folder_setting!r}",
                    step="folder",
                    code="FolderNotFound",
                )
            folder = str(match[0]["id"])
        project = self._projects[key] = Project(container, folder)
        return project

    def _upload(
        self, attempt: _Attempt, target: RfiTarget, project: Project, info: ObjectInfo, record: TransferRecord
    ) -> StorageObject:
        """Storage object, parts and completion: each recorded, so a retry resumes where this one stopped."""
        up = attempt.upload
        object_id = record.text(F_STORAGE)
        if object_id is None:
            obj = self._vendor(
                "storage", lambda: self.aps.create_storage(target.project_id, project.folder_id, target.file_name)
            )
            self.records.update(up, step=Step.CREATED, storage_object_id=obj.object_id)
        else:
            obj = StorageObject.parse(object_id)
        if record.item.get(F_COMPLETED, {}).get("BOOL"):
            return obj
        upload_key = record.text(F_UPLOAD_KEY)
        attempt.parts = {int(n) for n in (record.text(F_PARTS) or "").split(",") if n}
        recorded_size = record.text(F_PART_BYTES)
        part_bytes = int(recorded_size) if upload_key and recorded_size else self.settings.aps_part_bytes
        lock = threading.Lock()

        def part_done(key: str, number: int) -> None:
            with lock:
                attempt.parts.add(number)
                done = ",".join(str(n) for n in sorted(attempt.parts))
                self.records.update(up, upload_key=key, parts_done=done, part_bytes=str(part_bytes))

        def send(key: str | None) -> str:
            return self.aps.upload_parts(
                obj,
                info.size,
                part_bytes,
                lambda start, length: self.objects.open_range(up, start, length),
                upload_key=key,
                done=set(attempt.parts) if key else (),
                concurrency=self.settings.aps_part_concurrency,
                on_part=part_done,
            )

        try:
            upload_key = send(upload_key)
        except InvalidRequestError:
            if upload_key is None:
                raise
            # The recorded uploadKey outlived its life (or was completed elsewhere): start the parts afresh.
            logger.info("the recorded uploadKey is no longer valid; uploading every part again")
            attempt.parts.clear()
            part_bytes = self.settings.aps_part_bytes
            self.records.update(up, remove=(F_UPLOAD_KEY, F_PARTS, F_PART_BYTES))
            upload_key = self._vendor("upload", lambda: send(None))
        except VendorError as error:
            raise step_error("upload", error) from error
        attempt.complete_doubt = self._complete(obj, upload_key)
        if attempt.complete_doubt is None:
            self.records.update(up, step=Step.UPLOADED, bytes=info.size, completed=True, upload_key=upload_key)
        return obj

    def _complete(self, obj: StorageObject, upload_key: str) -> InvalidRequestError | None:
        """Complete the upload; return the refusal when APS answers 400, for the item step to settle.

        A complete that already landed (its answer lost, or a crash before its record) is refused the second
        time, its uploadKey spent. Whether it landed is not asked of OSS (object details take an app token,
        the relay holds a user's): the item POST that follows is refused if it did not.
        """
        try:
            self.aps.complete_upload(obj, upload_key)
        except InvalidRequestError as error:
            logger.info("the complete was refused; an earlier one may have landed", extra={"error": str(error)})
            return error
        except VendorError as error:
            raise step_error("complete", error) from error
        return None

    def _find(self, target: RfiTarget, project: Project) -> FolderItem | None:
        items = self._vendor("item", lambda: list(self.aps.folder_items(target.project_id, project.folder_id)))
        return next((i for i in items if i.name == target.dm_name), None)

    def _ours(self, target: RfiTarget, item: FolderItem, obj: StorageObject) -> str | None:
        """The id of `item`'s version made from `obj` (this upload's storage object), or None: never two."""
        if item.tip_storage_id == obj.object_id:
            return item.tip_version_id or ""
        versions = self._vendor("item", lambda: list(self.aps.item_versions(target.project_id, item.item_id)))
        return next((v for v, storage in versions if storage == obj.object_id), None)

    def _ensure_version(self, attempt: _Attempt, target: RfiTarget, project: Project, obj: StorageObject) -> None:
        """The item (first version), or a new version of the item that already holds this name; never two.

        Each round lists the folder first: a version made from this upload's storage object is adopted (the
        tip, or any version, since someone may have versioned the item since). A 409 (someone else made the
        name) lists again. A 500 after the POST lists again and, finding nothing, POSTs again after the
        policy's wait; a lost answer, finding nothing, goes back to the queue: it may still land.
        """
        for round_ in range(1, ITEM_ROUNDS + 1):
            existing = self._find(target, project)
            version_id = self._ours(target, existing, obj) if existing is not None else None
            if existing is not None and version_id is not None:
                return self._record_version(attempt, existing.item_id, version_id)
            try:
                if existing is not None:
                    version_id = self.aps.create_version(target.project_id, existing.item_id, target.dm_name, obj)
                    return self._record_version(attempt, existing.item_id, version_id)
                item_id, version_id = self.aps.create_item(target.project_id, project.folder_id, target.dm_name, obj)
                return self._record_version(attempt, item_id, version_id)
            except InvalidRequestError as error:
                if error.http_status == 409:
                    continue  # another upload made the name first: version it
                if attempt.complete_doubt is not None:  # the object was never completed: the complete's error
                    raise step_error("complete", attempt.complete_doubt) from error
                raise step_error("item", error) from error
            except VendorError as error:
                if not error.ambiguous:
                    raise step_error("item", error) from error
                if isinstance(error, ServerError) and round_ < ITEM_ROUNDS and self.aps.pause(error, round_):
                    continue
                found = self._find(target, project)  # a lost answer: look once more, then back to the queue
                version_id = self._ours(target, found, obj) if found is not None else None
                if found is not None and version_id is not None:
                    return self._record_version(attempt, found.item_id, version_id)
                raise step_error("item", error) from error
        raise UnresolvedCreateError(
            f"step item: {target.dm_name!r} was taken {ITEM_ROUNDS} times by another upload, and no listing "
            "showed an item to version yet"
        )

    def _record_version(self, attempt: _Attempt, item_id: str, version_id: str | None) -> None:
        attempt.item_id, attempt.version_id = item_id, version_id or ""
        self.records.update(attempt.upload, item_id=item_id, version_id=attempt.version_id)
        if attempt.complete_doubt is not None and attempt.info is not None:
            # DM took the object: the earlier complete had landed.
            self.records.update(attempt.upload, step=Step.UPLOADED, bytes=attempt.info.size, completed=True)
            attempt.complete_doubt = None

    def _ensure_attached(self, attempt: _Attempt, target: RfiTarget, project: Project) -> None:
        """Attach the item's lineage to the RFI, unless the RFI holds it already (a lost answer, a re-upload).

        After an ambiguous failure the RFI is listed first. A 500 was an answer: the server is done with the
        request, so an empty listing means it did nothing and the attach is sent again. A lost answer may
        still be at work: an empty listing sends the message back to the queue, never a blind second attach.
        """
        assert attempt.item_id is not None  # nosec B101  # for mypy: _ensure_version set it, or the record had it
        item_id = attempt.item_id
        adopted = self._adopt(project, target, item_id)
        if adopted is None:
            try:
                adopted, _ = post_once(
                    lambda: str(
                        self.aps.attach_to_rfi(project.container_id, target.rfi_id, target.file_name, item_id)["id"]
                    ),
                    lambda: self._adopt(project, target, item_id),  # it may have landed: never attach twice
                    self.aps.pause,
                )
            except VendorError as error:
                if error.ambiguous:
                    raise
                raise step_error("attach", error) from error
        attempt.rfi_attachment_id = adopted
        self.records.update(attempt.upload, rfi_attachment_id=adopted)

    def _adopt(self, project: Project, target: RfiTarget, item_id: str) -> str | None:
        attachments = self._vendor(
            "attach", lambda: list(self.aps.list_rfi_attachments(project.container_id, target.rfi_id))
        )
        found = next(
            (a for a in attachments if a.get("urn") == item_id and a.get("id") and not a.get("deletedAt")), None
        )
        return str(found["id"]) if found else None

    # -- outcomes -------------------------------------------------------------------------------

    def _attached(self, attempt: _Attempt) -> TransferOutcome:
        outcome = attempt.outcome(Status.ATTACHED)
        self._tag(attempt, outcome)
        self.records.update(
            attempt.upload,
            step=Step.DONE,
            status=Status.ATTACHED,
            attachment_id=outcome.attachment_id,
            bytes=outcome.bytes,
            # The RFI attach body has no caption: the record keeps the user's, beside the attachment it names.
            caption=attempt.info.metadata.get("caption") if attempt.info else None,
            error_code=None,
            error_message=None,
            error_step=None,
        )
        self._report(attempt, outcome, None)
        metrics.add_metric(name="BytesRelayed", unit=MetricUnit.Bytes, value=outcome.bytes)
        return outcome

    def _conclude(self, attempt: _Attempt, error: BaseException) -> TransferOutcome:
        """The one place an error becomes an outcome: retry, skip, or a final tag and record."""
        outcome = outcome_of(error)
        if not isinstance(error, RelayError):
            logger.error("unexpected error in a transfer", exc_info=error, extra={"upload": attempt.upload.identity})
        step = error.step if isinstance(error, StepFailedError) else None
        if outcome is Outcome.RETRY and not attempt.final_delivery:
            result = attempt.outcome(Status.RETRYING, error)
            self.records.update(
                attempt.upload, status=Status.RETRYING, error_code=result.error_code, error_message=result.message
            )
            self._report(attempt, result, error)
            raise NotFinalError(result, error, retry=True)
        if outcome is Outcome.SKIPPED:
            result = attempt.outcome(Status.SKIPPED, error)
            self.records.update(attempt.upload, status=Status.SKIPPED, error_code=result.error_code)
            self._report(attempt, result, error)
            raise NotFinalError(result, error, retry=False)
        result = attempt.outcome(_FINAL_STATUS[outcome], error)
        self._tag(attempt, result)
        # A DM version made before the failure stays (DM keeps history): the record and the tag name it.
        self.records.update(
            attempt.upload,
            status=result.status,
            error_code=result.error_code,
            error_message=result.message,
            error_step=step,
            bytes=result.bytes,
        )
        self._report(attempt, result, error)
        if outcome is Outcome.RETRY:
            raise NotFinalError(result, error, retry=True)  # last delivery: failed, and on to the DLQ
        return result

    def _tag(self, attempt: _Attempt, result: TransferOutcome) -> None:
        try:
            self.objects.tag(
                attempt.upload, result.status, result.attachment_id, result.error_code, {TAG_DM_ITEM: attempt.item_id}
            )
        except ObjectGoneError:
            pass
        except ObjectStoreError as error:
            if attempt.target is not None and not attempt.final_delivery and result.status != Status.ATTACHED:
                raise
            logger.warning("could not tag the object; the record holds the outcome", extra={"error": str(error)})
            self.records.update(attempt.upload, tag_error=error.code)

    def _tag_quietly(
        self, upload: Upload, status: str, attachment_id: str | None, code: str | None, item: str | None
    ) -> None:
        try:
            self.objects.tag(upload, status, attachment_id, code, {TAG_DM_ITEM: item})
        except Exception:  # noqa: BLE001 - best effort; the log line before says what happened
            logger.exception("could not tag a failed upload on its last delivery", extra={"upload": upload.identity})

    def _report(self, attempt: _Attempt, outcome: TransferOutcome, error: BaseException | None) -> None:
        """The one structured line per transfer attempt, and its metric."""
        log = logger.info if outcome.status in (Status.ATTACHED, Status.SKIPPED) else logger.warning
        log(
            "transfer finished" if outcome.status != Status.RETRYING else "transfer will be retried",
            extra={
                "key": attempt.upload.key,
                "version_id": attempt.upload.version_id,
                "target": outcome.target,
                "attachment_id": outcome.attachment_id,
                "item_id": attempt.item_id,
                "version": attempt.version_id,
                "bytes": outcome.bytes,
                "duration_ms": round((self.clock() - attempt.started) * 1000),
                "outcome": outcome.status,
                "error_code": outcome.error_code,
                "error": outcome.message,
            },
        )
        metrics.add_metric(name=f"Uploads{outcome.status.capitalize()}", unit=MetricUnit.Count, value=1)


def build_s3_to_rfi(
    settings: Settings | None = None,
    *,
    s3_client: Any = None,
    dynamodb_client: Any = None,
    objects: ObjectStore | None = None,
    aps: ApsClient | None = None,
    **client_options: Any,
) -> S3ToRfiFlow:
    """Wire the flow from the environment, once per container; tests pass their own collaborators."""
    settings = settings or Settings.load()
    settings.require("aps_hub_id")  # a missing hub stops the function at its cold start, not each upload
    if settings.max_receive_count is None:
        logger.warning("RELAY_MAX_RECEIVE_COUNT is not set; failures will reach the DLQ without a failed tag")
    dynamodb = dynamodb_client or boto3.client("dynamodb")
    # One ranged GET per part in flight: the S3 pool holds them all, or connections are dropped and remade.
    s3_config = Config(max_pool_connections=max(10, settings.aps_part_concurrency))
    return S3ToRfiFlow(
        settings=settings,
        objects=objects or ObjectStore(s3_client or boto3.client("s3", config=s3_config)),
        aps=aps or aps_client(settings, **client_options),
        records=TransferRecords(settings.require("transfers_table"), dynamodb),
        persistence=DynamoDBPersistenceLayer(table_name=settings.require("idempotency_table"), boto3_client=dynamodb),
    )
