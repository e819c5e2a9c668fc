"""A lease in DynamoDB: one conditional write with an expiry decides which run may spend a refresh token."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.errors import RecordStoreError


@dataclass(frozen=True)
class LeaseState:
    """What the lease item remembered from earlier runs, read in the same write that took the lease."""

    # sha256 of the refresh token the last successful run spent: a secret read still holding it is stale.
    spent_refresh: str | None = None
    # sha256 of a refresh token the token endpoint refused (invalid_grant): never presented again.
    dead_refresh: str | None = None


class Lease:
    """One item per secret: `holder` and `lease_until` (epoch seconds), plus what the runs must remember.

    Reserved concurrency 1 keeps the schedule to one run at a time; the lease also covers a manual run beside
    the schedule, or a second stack pointing at the same secret.
    """

    def __init__(
        self,
        table: str,
        client: Any,
        name: str,
        *,
        seconds: float,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
    ) -> None:
        self.table = table
        self.client = client
        self.key = {"id": {"S": name}}
        self.seconds = seconds
        self.clock = clock
        self.holder = holder or uuid.uuid4().hex

    def acquire(self) -> LeaseState | None:
        """Take the lease if it is free or expired: the state it held, or None when another run holds it."""
        now = self.clock()
        try:
            answer = self.client.update_item(
                TableName=self.table,
                Key=self.key,
                UpdateExpression="SET holder = :me, lease_until = :until",
                ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :now",
                ExpressionAttributeValues={
                    ":me": {"S": self.holder},
                    ":until": {"N": repr(now + self.seconds)},
                    ":now": {"N": repr(now)},
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise RecordStoreError(f"lease table: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"lease table: {type(exc).__name__}") from exc
        old = answer.get("Attributes", {})
        return LeaseState(old.get("spent_refresh", {}).get("S"), old.get("dead_refresh", {}).get("S"))

    def release(self, *, spent_refresh: str | None = None, dead_refresh: str | None = None) -> bool:
        """Free the lease and remember what this run learned; False when it expired and another run took it."""
        names = ["lease_until = :zero"]
        values: dict[str, Any] = {":me": {"S": self.holder}, ":zero": {"N": "0"}}
        if spent_refresh is not None:
            names.append("spent_refresh = :spent")
            values[":spent"] = {"S": spent_refresh}
        if dead_refresh is not None:
            names.append("dead_refresh = :dead")
            values[":dead"] = {"S": dead_refresh}
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self.key,
                UpdateExpression="SET " + ", ".join(names),
                ConditionExpression="holder = :me",
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise RecordStoreError(f"lease table: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"lease table: {type(exc).__name__}") from exc
        return True
