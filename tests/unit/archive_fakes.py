"""Stand-ins for the archive's collaborators: an iTwin with files to download, and an SQS client that records."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from relay import errors as e
from relay.transport.requestor import Requestor
from relay.transport.retry import Deadline
from relay.vendors.itwin import ITwinClient, Kind

BASE = "https://api.bentley.com"
MiB = 1024 * 1024


class FakeRaw:
    """requests.Response as `_chunks` reads it: `iter_content` in blocks, and `close`."""

    def __init__(self, data: bytes, *, break_after: int | None = None, error: BaseException | None = None) -> None:
        self.data = data
        self.break_after = break_after  # chunks served before `error` is raised
        self.error = error
        self.closed = False

    def iter_content(self, chunk_size: int = 1) -> Iterator[bytes]:
        for number, start in enumerate(range(0, len(self.data), chunk_size)):
            if self.break_after is not None and number >= self.break_after and self.error is not None:
                raise self.error
            yield self.data[start : start + chunk_size]

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeDownload:
    headers: dict[str, str]
    raw: FakeRaw


@dataclass
class StoredAttachment:
    item: dict[str, Any]
    data: bytes
    content_type: str = "application/octet-stream"
    break_after: int | None = None
    error: BaseException | None = None


class ArchiveItwin(ITwinClient):
    """iTwin as the archive sees it: listings (in pages of `page` items) and streamed downloads, in memory."""

    def __init__(self, page: int = 2) -> None:
        super().__init__(Requestor(BASE, tokens=None))  # the real client's URLs; no request is ever sent
        self.parents: dict[tuple[str, str], list[StoredAttachment]] = {}
        self.page = page
        self.calls: Counter[str] = Counter()
        self.pages_served = 0
        self.downloads: list[FakeDownload] = []
        self.deadline: Deadline | None = None

    def use_deadline(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def add(self, kind: Kind, parent_id: str, file_name: str, data: bytes, **fields: Any) -> dict[str, Any]:
        held = self.parents.setdefault((kind, parent_id), [])
        item = {
            "id": fields.pop("id", f"att-{sum(len(v) for v in self.parents.values()) + 1}"),
            "fileName": file_name,
            "createdDateTime": "2026-12-02T10:00:00.0000000Z",
            "size": len(data),
            "caption": None,
            "binding": None,
            "type": "image" if file_name.endswith(".jpg") else "document",
            **fields,
        }
        held.append(StoredAttachment(item, data))
        return item

    def stored(self, attachment_id: str) -> StoredAttachment:
        return next(a for held in self.parents.values() for a in held if a.item["id"] == attachment_id)

    def list_attachments(self, kind: Kind, parent_id: str) -> Iterator[dict[str, Any]]:
        self.calls["list"] += 1
        if (kind, parent_id) not in self.parents:
            code = "FormDataNotFound" if kind == "forms" else "IssueNotFound"
            raise e.NotFoundError("Requested item is not available.", http_status=404, code=code, target="id")
        items = [dict(a.item) for a in self.parents[(kind, parent_id)]]
        for start in range(0, len(items), self.page):  # page by page, as iTwin's `$top` does
            self.pages_served += 1
            yield from items[start : start + self.page]

    def download(self, kind: Kind, parent_id: str, attachment_id: str) -> Any:
        self.calls["download"] += 1
        held = self.stored(attachment_id)
        answer = FakeDownload(
            {"Content-Type": held.content_type}, FakeRaw(held.data, break_after=held.break_after, error=held.error)
        )
        self.downloads.append(answer)
        return answer


@dataclass
class FakeSqs:
    """SendMessageBatch as SQS answers it; `refuse` scripts, per call, the entry ids that fail."""

    refuse: list[set[str]] = field(default_factory=list)
    errors: list[BaseException | None] = field(default_factory=list)
    calls: list[list[dict[str, str]]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.calls.append([dict(entry) for entry in Entries])
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        refused = self.refuse.pop(0) if self.refuse else set()
        ok = [entry for entry in Entries if entry["Id"] not in refused]
        self.delivered.extend(json.loads(entry["MessageBody"]) for entry in ok)
        return {
            "Successful": [{"Id": entry["Id"], "MessageId": f"m-{entry['Id']}"} for entry in ok],
            "Failed": [
                {"Id": entry["Id"], "SenderFault": False, "Code": "InternalError"}
                for entry in Entries
                if entry["Id"] in refused
            ],
        }


def blob(size: int, seed: int = 7) -> bytes:
    """`size` bytes that differ from part to part (so a misplaced part shows), built a MiB at a time."""
    block = bytes((seed + i) % 251 for i in range(MiB))
    whole = bytearray()
    number = 0
    while len(whole) < size:
        whole += bytes([number % 256]) + block[1:]
        number += 1
    return bytes(whole[:size])
