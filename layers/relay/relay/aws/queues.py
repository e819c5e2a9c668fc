"""Hand work to a queue: SendMessageBatch in tens, with failed entries sent again once."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.errors import QueueError

BATCH = 10  # SQS takes at most 10 entries a batch


class WorkQueue:
    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url

    def send(self, bodies: Sequence[Mapping[str, Any]]) -> None:
        """Send every body (as JSON), or raise QueueError whose `unsent` lists the bodies that did not go."""
        for start in range(0, len(bodies), BATCH):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(body, separators=(",", ":"))}
                for i, body in enumerate(bodies[start : start + BATCH])
            ]
            for _ in range(2):
                try:
                    answer = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
                except (ClientError, BotoCoreError) as exc:
                    reason = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
                    error = QueueError(f"sending to the archive queue failed: {reason}")
                    # This try's entries (a resend holds only the refused ones) and every later batch.
                    error.unsent = [*(bodies[start + int(e["Id"])] for e in entries), *bodies[start + BATCH :]]
                    raise error from exc
                failed = {f["Id"] for f in answer.get("Failed", [])}
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
            if entries:
                error = QueueError(f"{len(entries)} message(s) were refused by the archive queue")
                unsent_here = [bodies[start + int(e["Id"])] for e in entries]
                error.unsent = [*unsent_here, *bodies[start + BATCH :]]
                raise error
