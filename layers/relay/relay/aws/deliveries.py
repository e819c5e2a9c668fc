"""The webhook deliveries table: one claim per iTwin messageId (conditional put, TTL), and what became of it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.errors import RecordStoreError

# A claim still "received" after this long belongs to an invocation that died before it finished: retaken.
STALE_CLAIM_SECONDS = 60


class WebhookDeliveries:
    """Items keyed `id`: `delivery#<messageId>` (the dedupe claim) and `<what>#<attachment>` records."""

    def __init__(self, table: str, client: Any, *, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ClientError as exc:
            raise RecordStoreError(f"{what} failed: {exc.response.get('Error', {}).get('Code', '')}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"{what} failed: {type(exc).__name__}") from exc

    def claim(self, message_id: str, event_type: str) -> bool:
        """True for the first delivery of `message_id` (or one whose claimer died); False for a redelivery."""
        now = self.clock()
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "id": {"S": f"delivery#{message_id}"},
                    "state": {"S": "received"},
                    "event_type": {"S": event_type},
                    "claimed_at": {"N": str(int(now))},
                    "expires_at": {"N": str(int(now) + self.ttl_seconds)},
                },
                ConditionExpression="attribute_not_exists(id) OR (#s = :received AND claimed_at < :stale)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":received": {"S": "received"},
                    ":stale": {"N": str(int(now) - STALE_CLAIM_SECONDS)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise RecordStoreError(f"claiming a delivery failed: {exc.response['Error'].get('Code', '')}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"claiming a delivery failed: {type(exc).__name__}") from exc
        return True

    def done(self, message_id: str, action: str) -> None:
        self._call(
            "settling a delivery",
            lambda: self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": f"delivery#{message_id}"}},
                # Both names are DynamoDB reserved words: they go through ExpressionAttributeNames.
                UpdateExpression="SET #s = :done, #a = :action",
                ExpressionAttributeNames={"#s": "state", "#a": "action"},
                ExpressionAttributeValues={":done": {"S": "done"}, ":action": {"S": action}},
            ),
        )

    def release(self, message_id: str) -> None:
        """Forget a claim whose work failed, so iTwin's resend is handled afresh (best effort)."""
        # On failure the claim goes stale after STALE_CLAIM_SECONDS and is retaken then.
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.delete_item(TableName=self.table, Key={"id": {"S": f"delivery#{message_id}"}})

    def record(self, record_id: str, fields: Mapping[str, str | int]) -> None:
        """Write (overwrite) one outcome record, e.g. `unattached#forms/F/A` or `archive#issues/I/A`."""
        now = int(self.clock())
        item: dict[str, Any] = {
            "id": {"S": record_id},
            "recorded_at": {"N": str(now)},
            "expires_at": {"N": str(now + self.ttl_seconds)},
        }
        for name, value in fields.items():
            item[name] = {"N": str(value)} if isinstance(value, int) else {"S": value}
        self._call("recording a webhook outcome", lambda: self.client.put_item(TableName=self.table, Item=item))

    def get(self, record_id: str) -> dict[str, Any] | None:
        answer = self._call(
            "reading a webhook record",
            lambda: self.client.get_item(TableName=self.table, Key={"id": {"S": record_id}}, ConsistentRead=True),
        )
        item = answer.get("Item")
        if not item:
            return None
        return {k: v.get("S", v.get("N")) for k, v in item.items()}
