"""The queryable record of every upload (status, step reached, what the vendor said), and attachment claims."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.aws.s3events import Upload
from relay.errors import RecordStoreError

RETENTION_SECONDS = 90 * 24 * 3600
CLAIM_PREFIX = "claim#"


class Step(StrEnum):
    """How far a transfer got, in order. A retry resumes after the last one recorded."""

    RECEIVED = "received"
    CREATING = "creating"
    CREATED = "created"
    UPLOADED = "uploaded"
    DONE = "done"


class Status(StrEnum):
    """What a user sees. The object's relay-status tag carries the final ones."""

    PROCESSING = "processing"
    RETRYING = "retrying"
    ATTACHED = "attached"
    REJECTED = "rejected"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class TransferRecord:
    upload: str
    step: Step = Step.RECEIVED
    status: Status = Status.PROCESSING
    attachment_id: str | None = None
    location: str | None = None
    error_code: str | None = None
    attempts: int = 0
    # Every attribute as stored, for flows that record steps of their own (s3_to_rfi).
    item: dict[str, Any] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        value = self.item.get(name)
        return value["S"] if isinstance(value, dict) and "S" in value else None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> TransferRecord:
        def s(name: str) -> str | None:
            value = item.get(name)
            return value["S"] if value and "S" in value else None

        return cls(
            upload=s("upload") or "",
            step=Step(s("step") or Step.RECEIVED),
            status=Status(s("status") or Status.PROCESSING),
            attachment_id=s("attachment_id"),
            location=s("location"),
            error_code=s("error_code"),
            attempts=int(item.get("attempts", {}).get("N", "0")),
            item=dict(item),
        )


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"BOOL": v}
    if isinstance(v, int):
        return {"N": str(v)}
    if isinstance(v, (list, tuple, set, frozenset)):
        return {"SS": sorted(str(x) for x in v)}
    return {"S": str(v)}


class TransferRecords:
    """DynamoDB table keyed by upload identity (bucket/key#version); claim items share it under `claim#`."""

    def __init__(self, table: str, client: Any, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.client = client
        self.clock = clock

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(TableName=self.table, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise RecordStoreError(f"transfers table {self.table!r}: {method} failed: {type(exc).__name__}") from exc

    def begin(self, upload: Upload, target: str | None, file_name: str | None) -> TransferRecord:
        """Count the attempt and return what earlier attempts recorded."""
        now = self.clock()
        always: dict[str, Any] = {
            "updated_at": {"S": iso(now)},
            "key": {"S": upload.key},
            "bucket": {"S": upload.bucket},
            "expires_at": {"N": str(int(now + RETENTION_SECONDS))},
        }
        optional = (
            ("version_id", upload.version_id),
            ("etag", upload.etag),
            ("target", target),
            ("file_name", file_name),
        )
        always.update({name: {"S": value} for name, value in optional if value})
        first_only = {"created_at": {"S": iso(now)}, "step": {"S": Step.RECEIVED}, "status": {"S": Status.PROCESSING}}
        sets = [f"#{k} = :{k}" for k in always]
        sets += [f"#{k} = if_not_exists(#{k}, :{k})" for k in first_only]
        sets.append("#attempts = if_not_exists(#attempts, :zero) + :one")
        values = {f":{k}": v for k, v in {**always, **first_only}.items()} | {":zero": {"N": "0"}, ":one": {"N": "1"}}
        names = {f"#{k}": k for k in [*always, *first_only, "attempts"]}
        result = self._call(
            "update_item",
            Key={"upload": {"S": upload.identity}},
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return TransferRecord.from_item(result["Attributes"])

    def update(self, upload: Upload, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        """Set the given fields (None removes one) and `updated_at`."""
        fields["updated_at"] = iso(self.clock())
        names = {f"#{k}": k for k in fields} | {f"#{k}": k for k in remove}
        values = {f":{k}": _value(v) for k, v in fields.items() if v is not None}
        expression = "SET " + ", ".join(f"#{k} = :{k}" for k, v in fields.items() if v is not None)
        cleared = [k for k, v in fields.items() if v is None] + list(remove)
        if cleared:
            expression += " REMOVE " + ", ".join(f"#{k}" for k in cleared)
        self._call(
            "update_item",
            Key={"upload": {"S": upload.identity}},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def claim(self, attachment: str, upload: Upload) -> bool:
        """Make `upload` the one owner of a vendor attachment; False when another upload owns it already.

        A conditional put, so two uploads racing for the same attachment cannot both win.
        """
        now = self.clock()
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "upload": {"S": CLAIM_PREFIX + attachment},
                    "owner": {"S": upload.identity},
                    "claimed_at": {"S": iso(now)},
                    "expires_at": {"N": str(int(now + RETENTION_SECONDS))},
                },
                ConditionExpression="attribute_not_exists(#owner) OR #owner = :me",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":me": {"S": upload.identity}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise RecordStoreError(f"transfers table {self.table!r}: claim failed: {type(exc).__name__}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"transfers table {self.table!r}: claim failed: {type(exc).__name__}") from exc
        return True
