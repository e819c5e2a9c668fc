"""Archive one iTwin attachment into S3: skip a current copy, else stream iTwin's download into its key."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, cast

import requests

from relay.aws.archive import ArchivedCopy, ArchiveStore, CopyMetadata
from relay.errors import CopyTimedOutError, MalformedMessageError, MalformedResponseError, VendorConnectionError
from relay.vendors.itwin import KINDS, ITwinClient, Kind, usable_id

CHUNK = 1024 * 1024  # read from iTwin a MiB at a time; parts are assembled from these
MAX_ID = 128  # an id is a key segment: the archive key stays within S3's 1,024 bytes


@dataclass(frozen=True)
class AttachmentInfo:
    """iTwin's metadata for one attachment (the seed's shape), as read from a listing."""

    id: str
    fileName: str
    size: int | None = None
    caption: str | None = None
    binding: str | None = None
    createdDateTime: str | None = None
    type: str | None = None

    @classmethod
    def from_itwin(cls, item: dict[str, Any]) -> AttachmentInfo:
        attachment_id, name, size = item.get("id"), item.get("fileName"), item.get("size")
        if not usable_id(attachment_id) or len(str(attachment_id)) > MAX_ID or not isinstance(name, str):
            raise MalformedResponseError(f"a listed attachment has an unusable id or fileName: {attachment_id!r}")
        return cls(
            id=cast(str, attachment_id),
            fileName=name,
            size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
            caption=_text(item.get("caption")),
            binding=_text(item.get("binding")),
            createdDateTime=_text(item.get("createdDateTime")),
            type=_text(item.get("type")),
        )

    def as_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, and a listing calls this for every attachment.
        return {f: getattr(self, f) for f in FIELDS}


FIELDS = tuple(f.name for f in fields(AttachmentInfo))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ArchiveRequest:
    """One archive-queue message: copy this attachment, and count it in `job_id` when there is one.

    A webhook knows only the attachment's id: then `attachment` is None and the worker looks the metadata up.
    """

    kind: Kind
    parent_id: str
    attachment: AttachmentInfo | None
    job_id: str | None = None
    bare_id: str | None = None  # the id when `attachment` is None

    @classmethod
    def by_id(cls, kind: Kind, parent_id: str, attachment_id: str) -> ArchiveRequest:
        return cls(kind, parent_id, None, None, attachment_id)

    @property
    def attachment_id(self) -> str:
        return self.attachment.id if self.attachment else (self.bare_id or "")

    def body(self) -> dict[str, Any]:
        if self.attachment is None:
            return {"kind": self.kind, "parentId": self.parent_id, "attachmentId": self.bare_id, "jobId": None}
        return {
            "kind": self.kind,
            "parentId": self.parent_id,
            "attachment": self.attachment.as_dict(),
            "jobId": self.job_id,
        }

    @classmethod
    def parse(cls, body: str) -> ArchiveRequest:
        try:
            data = json.loads(body)
            kind, parent, job = data["kind"], data["parentId"], data.get("jobId")
            if "attachment" in data:
                attachment: AttachmentInfo | None = AttachmentInfo.from_itwin(data["attachment"])
                bare = None
            else:
                attachment, bare = None, data["attachmentId"]
        except (ValueError, TypeError, KeyError, AttributeError, MalformedResponseError) as exc:
            raise MalformedMessageError(f"not an archive request ({type(exc).__name__})") from None
        if kind not in KINDS or not usable_id(parent) or not (job is None or usable_id(job)):
            raise MalformedMessageError("an archive request names an unknown kind, parent or job")
        if attachment is None and (not usable_id(bare) or job is not None):
            raise MalformedMessageError("an archive request by id names an unusable attachment id, or a job")
        return cls(kind, parent, attachment, job, bare)


@dataclass(frozen=True)
class Archived:
    copy: ArchivedCopy
    copied: bool  # False: a current copy was there (or another writer made it first); nothing new was written


class Archiver:
    """Shared by `/file`, archive jobs and (later) webhooks: one attachment, one key, one copy."""

    def __init__(self, itwin: ITwinClient, store: ArchiveStore) -> None:
        self.itwin = itwin
        self.store = store

    def key(self, kind: Kind, parent_id: str, info: AttachmentInfo) -> str:
        return self.store.key(kind, parent_id, info.id, info.fileName)

    @staticmethod
    def is_current(copy: ArchivedCopy | None, info: AttachmentInfo) -> bool:
        """A copy is current when it is this attachment's and as large as iTwin says the file is."""
        return (
            copy is not None
            and copy.attachment_id == info.id
            and copy.sha256 is not None
            and (info.size is None or copy.size == info.size)
        )

    def current(self, kind: Kind, parent_id: str, info: AttachmentInfo) -> ArchivedCopy | None:
        copy = self.store.find(self.key(kind, parent_id, info))
        return copy if self.is_current(copy, info) else None

    def ensure(
        self,
        kind: Kind,
        parent_id: str,
        info: AttachmentInfo,
        *,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Archived:
        """The current copy, streaming iTwin's file into S3 when it is missing or stale (size or owner differ).

        Past `deadline` (a `clock` time) the copy stops with CopyTimedOutError and leaves no object behind.
        """
        key = self.key(kind, parent_id, info)
        existing = self.store.find(key)
        if self.is_current(existing, info):
            return Archived(existing, copied=False)  # type: ignore[arg-type]
        response = self.itwin.download(kind, parent_id, info.id)
        try:
            content_type = response.headers.get("Content-Type") or (
                mimetypes.guess_type(info.fileName)[0] or "application/octet-stream"
            )
            copy, wrote = self.store.write(
                key,
                _chunks(response.raw, deadline, clock),
                CopyMetadata(info.id, info.fileName, info.caption, info.binding, info.createdDateTime),
                content_type=content_type,
                replace=existing is not None,
                expected_size=info.size,
            )
        finally:
            response.raw.close()
        return Archived(copy, copied=wrote)


def _chunks(raw: requests.Response, deadline: float | None, clock: Callable[[], float]) -> Iterator[bytes]:
    """iTwin's body, a MiB at a time; a connection dropped mid-body is a retryable connection error."""
    read = 0
    try:
        for chunk in raw.iter_content(CHUNK):
            if deadline is not None and clock() > deadline:
                raise CopyTimedOutError(f"{read} bytes copied when the time ran out")
            read += len(chunk)
            yield chunk
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout) as exc:
        raise VendorConnectionError(
            f"the download broke off: {type(exc).__name__}", code="DownloadInterrupted"
        ) from exc
