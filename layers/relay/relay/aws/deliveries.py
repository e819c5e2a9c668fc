"""The webhook deliveries table: one claim per iTwin messageId (conditional put, TTL), and what became of it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.errors import RecordStoreError

# A claim still "received" after this long belongs to an invocation that died before it finished, and iTwin's
# resend takes it over. It is just over ItwinWebhooksFunction's Timeout (5 s), so a resend (iTwin waits ~5 s)
# finds a dead claim taken over rather than acknowledged.
STALE_CLAIM_SECONDS = 8.0
# Failure records outlive the dead-letter queue's 14 days, so a message there always has its record.
FAILURE_RECORD_SECONDS = 15 * 24 * 3600


class Claim(Enum):
    """What `claim` found: this delivery owns the work, the work is done, or another invocation holds it."""

    OWNED = "owned"
    DONE = "done"
    IN_FLIGHT = "in_flight"


class WebhookDeliveries:
    """Items keyed `id`: `delivery#<messageId>` (the dedupe claim) and `<what>#<attachment>` records."""

    def __init__(
        self,
        table: str,
        client: Any,
        *,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
        stale_seconds: float = STALE_CLAIM_SECONDS,
    ) -> None:
        self.table = table
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.stale_seconds = stale_seconds

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ClientError as exc:
            raise RecordStoreError(f"{what} failed: {exc.response.get('Error', {}).get('Code', '')}") from exc
        except BotoCoreError as exc:
            raise RecordStoreError(f"{what} failed: {type(exc).__name__}") from exc

    def claim(self, message_id: str, event_type: str) -> tuple[Claim, str]:
        """Claim the first delivery of `message_id` (or one whose claimer died). Returns the outcome and, when
        OWNED, this claim's token (for `release`). A redelivery is DONE only once the first one's work is."""
        now = self.clock()
        token = f"{now:.6f}"
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "id": {"S": f"delivery#{message_id}"},
                    "state": {"S": "received"},
                    "event_type": {"S": event_type},
                    "claimed_at": {"N": token},
                    "expires_at": {"N": str(int(now) + self.ttl_seconds)},
                },
                ConditionExpression="attribute_not_exists(id) OR (#s = :received AND claimed_at < :stale)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":received": {"S": "received"},
                    ":stale": {"N": f"{now - self.stale_seconds:.6f}"},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise RecordStoreError(f"claiming a delivery failed: {exc.response['Error'].get('Code', '')}") from exc
            return self.state(message_id), ""
        except BotoCoreError as exc:
            raise RecordStoreError(f"claiming a delivery failed: {type(exc).__name__}") from exc
        return Claim.OWNED, token

    def state(self, message_id: str) -> Claim:
        """DONE when the delivery's work is finished, else IN_FLIGHT (a live claim; a vanished one is retried)."""
        item = self.get(f"delivery#{message_id}")
        return Claim.DONE if item is not None and item.get("state") == "done" else Claim.IN_FLIGHT

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

    def release(self, message_id: str, token: str) -> None:
        """Forget this invocation's claim after its work failed, so iTwin's resend is handled afresh (best effort).

        Only the claim with `token` is deleted: one taken over since (or settled) is left alone. If the delete
        fails, the claim goes stale after `stale_seconds` and a resend takes it over then."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.delete_item(
                TableName=self.table,
                Key={"id": {"S": f"delivery#{message_id}"}},
                ConditionExpression="#s = :received AND claimed_at = :mine",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":received": {"S": "received"}, ":mine": {"N": token}},
            )

    def record(self, record_id: str, fields: Mapping[str, str | int], *, keep_seconds: int | None = None) -> None:
        """Write (overwrite) one outcome record, e.g. `unattached#forms/F/A` or `archive#issues/I/A`."""
        now = int(self.clock())
        item: dict[str, Any] = {
            "id": {"S": record_id},
            "recorded_at": {"N": str(now)},
            "expires_at": {"N": str(now + (keep_seconds or self.ttl_seconds))},
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
