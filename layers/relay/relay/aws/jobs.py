"""Archive jobs in DynamoDB: one running job per parent, and each attachment's outcome counted exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.errors import RecordStoreError

RETENTION_SECONDS = 30 * 24 * 3600


# The job item names this many failures at most (an item holds 400 KB); `failed` still counts every one.
MAX_LISTED_FAILURES = 200


class JobState(StrEnum):
    RUNNING = "running"
    # Shown, never stored: running, and not moved for `stale_after` (messages lost to a crash or the DLQ).
    STALLED = "stalled"
    SUCCEEDED = "succeeded"  # every attachment archived or already there
    COMPLETED_WITH_FAILURES = "completed_with_failures"


class Result(StrEnum):
    """What became of one attachment of a job."""

    ARCHIVED = "archived"
    SKIPPED = "skipped"  # a current copy was already there: nothing was downloaded
    FAILED = "failed"


@dataclass(frozen=True)
class Failure:
    attachment_id: str
    code: str
    message: str


@dataclass(frozen=True)
class ArchiveJob:
    job_id: str
    kind: str
    parent_id: str
    state: JobState
    total: int
    archived: int = 0
    skipped: int = 0
    failed: int = 0
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    created_at: str = ""
    updated_at: str = ""

    @property
    def settled(self) -> int:
        return self.archived + self.skipped + self.failed


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _s(item: dict[str, Any], name: str) -> str:
    value = item.get(name, {})
    return str(value.get("S", "")) if isinstance(value, dict) else ""


def _n(item: dict[str, Any], name: str) -> int:
    value = item.get(name, {})
    return int(value.get("N", "0")) if isinstance(value, dict) else 0


def _job(item: dict[str, Any]) -> ArchiveJob:
    failures = tuple(
        Failure(f["M"]["attachmentId"]["S"], f["M"]["code"]["S"], f["M"]["message"]["S"])
        for f in item.get("failures", {}).get("L", [])
    )
    return ArchiveJob(
        job_id=_s(item, "job_id"),
        kind=_s(item, "kind"),
        parent_id=_s(item, "parent_id"),
        state=JobState(_s(item, "state") or JobState.RUNNING),
        total=_n(item, "total"),
        archived=_n(item, "archived"),
        skipped=_n(item, "skipped"),
        failed=_n(item, "failed"),
        failures=failures,
        created_at=_s(item, "created_at"),
        updated_at=_s(item, "updated_at"),
    )


def _conflicted(exc: ClientError) -> bool:
    reasons = exc.response.get("CancellationReasons") or []
    code = exc.response.get("Error", {}).get("Code")
    return code == "TransactionConflictException" or any(r.get("Code") == "TransactionConflict" for r in reasons)


def _cancelled_by_condition(exc: ClientError) -> bool:
    if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
        return True
    reasons = exc.response.get("CancellationReasons") or []
    return exc.response.get("Error", {}).get("Code") == "TransactionCanceledException" and any(
        r.get("Code") == "ConditionalCheckFailed" for r in reasons
    )


class ArchiveJobs:
    """Items: `job#<id>` (the job and its counters), `job#<id>#<attachmentId>` (one outcome each),
    `active#<kind>/<parentId>` (the parent's running job, so a second POST finds it)."""

    def __init__(
        self,
        table: str,
        client: Any,
        *,
        stale_after: float = 3600,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.table = table
        self.client = client
        self.stale_after = stale_after
        self.clock = clock
        self.new_id = new_id

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            raise RecordStoreError(f"{what} in {self.table} failed: {code}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"{what} in {self.table} failed: {type(exc).__name__}") from exc

    def _get(self, key: str) -> dict[str, Any] | None:
        answer = self._call(
            "reading", lambda: self.client.get_item(TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True)
        )
        item: dict[str, Any] | None = answer.get("Item")
        return item

    def get(self, job_id: str) -> ArchiveJob | None:
        item = self._get(f"job#{job_id}")
        return _job(item) if item else None

    def view(self, job_id: str) -> ArchiveJob | None:
        """The job as a caller sees it: a running one that has not moved for `stale_after` reads `stalled`."""
        job = self.get(job_id)
        if job is not None and job.state is JobState.RUNNING and self._stale(job):
            return replace(job, state=JobState.STALLED)
        return job

    def _stale(self, job: ArchiveJob) -> bool:
        moved = datetime.fromisoformat(job.updated_at.replace("Z", "+00:00")).timestamp() if job.updated_at else 0
        return self.clock() - moved >= self.stale_after

    def running(self, kind: str, parent_id: str) -> ArchiveJob | None:
        """The parent's running job, unless it has not moved for `stale_after` seconds (its messages were lost)."""
        lock = self._get(f"active#{kind}/{parent_id}")
        if lock is None:
            return None
        job = self.get(_s(lock, "job_id"))
        if job is None or job.state is not JobState.RUNNING:
            return None
        return None if self._stale(job) else job

    def start(self, kind: str, parent_id: str, total: int) -> tuple[ArchiveJob, bool]:
        """A new running job for the parent, or (when one started meanwhile) that one; True when it is new."""
        for _ in range(3):
            current = self.running(kind, parent_id)
            if current is not None:
                return current, False
            lock_key = f"active#{kind}/{parent_id}"
            lock = self._get(lock_key)
            previous = _s(lock, "job_id") if lock else None
            now = _stamp(self.clock())
            job = ArchiveJob(self.new_id(), kind, parent_id, JobState.RUNNING, total, created_at=now, updated_at=now)
            lock_condition: dict[str, Any] = (
                {
                    "ConditionExpression": "job_id = :previous",
                    "ExpressionAttributeValues": {":previous": {"S": previous}},
                }
                if previous
                else {"ConditionExpression": "attribute_not_exists(id)"}
            )
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": {"id": {"S": lock_key}, "job_id": {"S": job.job_id}, **self._expiry()},
                                **lock_condition,
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": self._job_item(job),
                                "ConditionExpression": "attribute_not_exists(id)",
                            }
                        },
                    ]
                )
            except ClientError as exc:
                if _cancelled_by_condition(exc):
                    continue  # another POST won the lock: return its job on the next turn
                raise RecordStoreError(
                    f"starting a job in {self.table} failed: {exc.response['Error']['Code']}"
                ) from exc
            except BotoCoreError as exc:
                raise RecordStoreError(f"starting a job in {self.table} failed: {type(exc).__name__}") from exc
            if total == 0:
                return self._settle(job), True
            return job, True
        raise RecordStoreError(f"the archive lock of {kind}/{parent_id} kept changing")

    def record(self, job_id: str, attachment_id: str, result: Result, code: str = "", message: str = "") -> ArchiveJob:
        """Count the attachment's outcome once (a redelivered message changes nothing), then settle the job."""
        now = _stamp(self.clock())
        names = {"#r": str(result), "#u": "updated_at"}
        values: dict[str, Any] = {":one": {"N": "1"}, ":now": {"S": now}}
        update = "ADD #r :one SET #u = :now"
        counted = False
        for attempt in range(1, 4):
            try:
                self._count(job_id, attachment_id, result, code, now, update, names, values)
                counted = True
                break
            except ClientError as exc:
                if _cancelled_by_condition(exc):
                    break  # counted before (a redelivery), or the job expired: nothing new to count
                if not _conflicted(exc) or attempt == 3:
                    raise RecordStoreError(
                        f"recording {attachment_id} of job {job_id} failed: {exc.response['Error']['Code']}"
                    ) from exc
                # Workers finishing at once contend for the job item: the transaction is simply tried again.
            except BotoCoreError as exc:
                raise RecordStoreError(
                    f"recording {attachment_id} of job {job_id} failed: {type(exc).__name__}"
                ) from exc
        if counted and result is Result.FAILED:
            self._list_failure(job_id, attachment_id, code, message)
        job = self.get(job_id)
        if job is None:
            raise RecordStoreError(f"job {job_id} is not in {self.table}")
        return self._settle(job) if job.state is JobState.RUNNING and job.settled >= job.total else job

    def _list_failure(self, job_id: str, attachment_id: str, code: str, message: str) -> None:
        """Name the failure in the job item, up to MAX_LISTED_FAILURES (an item holds 400 KB); `failed` counts all."""
        entry = {
            "M": {
                "attachmentId": {"S": attachment_id},
                "code": {"S": code or "Failed"},
                "message": {"S": message[:300] or code},
            }
        }
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": f"job#{job_id}"}},
                UpdateExpression="SET failures = list_append(if_not_exists(failures, :none), :failure)",
                ConditionExpression="attribute_not_exists(failures) OR size(failures) < :cap",
                ExpressionAttributeValues={
                    ":failure": {"L": [entry]},
                    ":none": {"L": []},
                    ":cap": {"N": str(MAX_LISTED_FAILURES)},
                },
            )
        except ClientError as exc:
            if not _cancelled_by_condition(exc):
                raise RecordStoreError(
                    f"listing a failure of job {job_id} failed: {exc.response['Error']['Code']}"
                ) from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"listing a failure of job {job_id} failed: {type(exc).__name__}") from exc

    def _count(
        self,
        job_id: str,
        attachment_id: str,
        result: Result,
        code: str,
        now: str,
        update: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> None:
        self.client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "id": {"S": f"job#{job_id}#{attachment_id}"},
                            "result": {"S": str(result)},
                            "code": {"S": code},
                            "at": {"S": now},
                            **self._expiry(),
                        },
                        "ConditionExpression": "attribute_not_exists(id)",
                    }
                },
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"id": {"S": f"job#{job_id}"}},
                        "UpdateExpression": update,
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                        "ConditionExpression": "attribute_exists(id)",
                    }
                },
            ]
        )

    def _settle(self, job: ArchiveJob) -> ArchiveJob:
        """Once every attachment is counted: the final state, and the parent's lock released."""
        state = JobState.SUCCEEDED if job.failed == 0 else JobState.COMPLETED_WITH_FAILURES
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": f"job#{job.job_id}"}},
                UpdateExpression="SET #s = :state, updated_at = :now",
                ConditionExpression="#s = :running",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":state": {"S": str(state)},
                    ":running": {"S": str(JobState.RUNNING)},
                    ":now": {"S": _stamp(self.clock())},
                },
            )
            self.client.delete_item(
                TableName=self.table,
                Key={"id": {"S": f"active#{job.kind}/{job.parent_id}"}},
                ConditionExpression="job_id = :job",
                ExpressionAttributeValues={":job": {"S": job.job_id}},
            )
        except ClientError as exc:
            if not _cancelled_by_condition(exc):
                raise RecordStoreError(f"settling job {job.job_id} failed: {exc.response['Error']['Code']}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"settling job {job.job_id} failed: {type(exc).__name__}") from exc
        return self.get(job.job_id) or job

    def _job_item(self, job: ArchiveJob) -> dict[str, Any]:
        return {
            "id": {"S": f"job#{job.job_id}"},
            "job_id": {"S": job.job_id},
            "kind": {"S": job.kind},
            "parent_id": {"S": job.parent_id},
            "state": {"S": str(job.state)},
            "total": {"N": str(job.total)},
            "archived": {"N": "0"},
            "skipped": {"N": "0"},
            "failed": {"N": "0"},
            "created_at": {"S": job.created_at},
            "updated_at": {"S": job.updated_at},
            **self._expiry(),
        }

    def _expiry(self) -> dict[str, Any]:
        return {"expires_at": {"N": str(int(self.clock()) + RETENTION_SECONDS)}}
