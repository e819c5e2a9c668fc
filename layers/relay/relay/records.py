"""The queryable record of every upload: status, the step reached, and what the vendor said."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.exceptions import RelayError
from relay.uploads import Target, Upload

RETENTION_SECONDS = 90 * 24 * 3600

# Steps, in order. A retry resumes after the last one recorded.
RECEIVED, CREATING, CREATED, UPLOADED, DONE = "received", "creating", "created", "uploaded", "done"
# Statuses a user sees (the object's relay-status tag carries the terminal ones).
ATTACHED, REJECTED, FAILED, SKIPPED, RETRYING, PROCESSING = (
    "attached",
    "rejected",
    "failed",
    "skipped",
    "retrying",
    "processing",
)


class RecordStoreError(RelayError):
    code = "RecordStoreError"


@dataclass
class TransferRecord:
    upload: str
    step: str = RECEIVED
    status: str = PROCESSING
    attachment_id: str | None = None
    location: str | None = None
    creating_since: str | None = None
    error_code: str | None = None
    attempts: int = 0

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> TransferRecord:
        def s(name: str) -> str | None:
            value = item.get(name)
            return value["S"] if value and "S" in value else None

        return cls(
            upload=s("upload") or "",
            step=s("step") or RECEIVED,
            status=s("status") or PROCESSING,
            attachment_id=s("attachment_id"),
            location=s("location"),
            creating_since=s("creating_since"),
            error_code=s("error_code"),
            attempts=int(item.get("attempts", {}).get("N", "0")),
        )


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TransferRecords:
    """DynamoDB table keyed by upload identity (bucket/key#version)."""

    def __init__(self, table: str, client: Any, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.client = client
        self.clock = clock

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(TableName=self.table, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise RecordStoreError(f"transfers table {self.table!r}: {method} failed: {type(exc).__name__}") from exc

    def begin(self, upload: Upload, target: Target | None) -> TransferRecord:
        """Count the attempt and return what earlier attempts recorded."""
        now = self.clock()
        always: dict[str, Any] = {
            "updated_at": {"S": iso(now)},
            "key": {"S": upload.key},
            "bucket": {"S": upload.bucket},
            "expires_at": {"N": str(int(now + RETENTION_SECONDS))},
        }
        for name, value in (("version_id", upload.version_id), ("etag", upload.etag)):
            if value:
                always[name] = {"S": value}
        if target is not None:
            always.update(
                target_kind={"S": target.kind}, target_id={"S": target.parent_id}, file_name={"S": target.file_name}
            )
        first_only = {"created_at": {"S": iso(now)}, "step": {"S": RECEIVED}, "status": {"S": PROCESSING}}
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
        fields["updated_at"] = iso(self.clock())
        names = {f"#{k}": k for k in fields} | {f"#{k}": k for k in remove}
        values = {
            f":{k}": ({"N": str(v)} if isinstance(v, int) else {"S": str(v)})
            for k, v in fields.items()
            if v is not None
        }
        sets = [f"#{k} = :{k}" for k, v in fields.items() if v is not None]
        expression = "SET " + ", ".join(sets)
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
