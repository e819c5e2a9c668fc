"""S3 side of the archive: one key per attachment, written once and whole, streamed part by part."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from relay import constants as c
from relay.aws.s3objects import decode_metadata
from relay.errors import IncompleteDownloadError, ObjectStoreError

# S3 allows 2 KB of user metadata (names and values); the caption gives way when it would not fit.
METADATA_LIMIT = 2048
MAX_KEY_BYTES = 1024
# CopyObject copies at most 5 GiB.
MAX_COPY_BYTES = 5 * 1024**3
# Parts uploading while the download goes on: the memory a copy holds is about this many parts, plus one.
PARTS_IN_FLIGHT = 2
META_ATTACHMENT, META_SHA256 = "attachment-id", "sha256"
# The most (encoded) characters these fields may take of the 2 KB; the caption has what is left.
SHARES = {"file-name": 1024, "binding": 256, "created-date-time": 64}


@dataclass(frozen=True)
class ArchivedCopy:
    """A copy as S3 holds it: where, how big, and what its metadata says it is."""

    key: str
    size: int
    attachment_id: str | None = None
    sha256: str | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class CopyMetadata:
    """What each copy carries as object metadata (iTwin's fields, and the sha256 of the bytes)."""

    attachment_id: str
    file_name: str
    caption: str | None
    binding: str | None
    created: str | None

    def encoded(self, sha256: str) -> dict[str, str]:
        fields = {
            META_ATTACHMENT: self.attachment_id,
            "file-name": self.file_name,
            "binding": self.binding,
            "created-date-time": self.created,
            META_SHA256: sha256,
        }
        meta = {k: _ascii(v) for k, v in fields.items() if v}
        # A name or binding too long for the 2 KB is cut too (and marked): S3 refuses the whole copy otherwise.
        for name, share in SHARES.items():
            value = fields[name]
            if value and len(meta[name]) > share:
                meta[name] = _ascii(_fit(value, share))
                meta[f"{name}-truncated"] = "true"
        if self.caption:
            room = METADATA_LIMIT - sum(len(k) + len(v) for k, v in meta.items()) - len("caption") - 64
            caption = _ascii(self.caption)
            if len(caption) > room:
                caption = _ascii(_fit(self.caption, room))
                meta["caption-truncated"] = "true"
            meta["caption"] = caption
        return meta


def _ascii(text: str) -> str:
    """S3 user metadata is ASCII on the wire: other text goes RFC 2047-encoded, as the SDKs send it.

    One base64 encoded word, never email.header's folding: that turns a line break in a caption into a space.
    ASCII that reads like an encoded word is encoded too, or the reader would decode what was never encoded.
    """
    if text.isascii() and text.isprintable() and "=?" not in text:
        return text
    return f"=?utf-8?b?{base64.b64encode(text.encode('utf-8', 'replace')).decode('ascii')}?="


def _fit(text: str, room: int) -> str:
    while text and len(_ascii(text)) > room:
        text = text[: max(0, len(text) - max(1, len(text) // 8))]
    return text


def safe_file_name(name: str) -> str:
    """A file name as one key segment: no separators or control characters, never empty or a dot segment."""
    cleaned = "".join("_" if ch in "/\\" or not ch.isprintable() else ch for ch in name).strip()
    return cleaned if cleaned not in ("", ".", "..") else "file"


def archive_key(kind: str, parent_id: str, attachment_id: str, file_name: str, prefix: str = c.ARCHIVE_PREFIX) -> str:
    """`archive/{issues|forms}/{parentId}/{attachmentId}/{fileName}`, the name shortened to fit S3's 1,024 bytes."""
    head = f"{prefix}{kind}/{parent_id}/{attachment_id}/"
    name = safe_file_name(file_name)
    room = MAX_KEY_BYTES - len(head.encode())
    if len(name.encode()) > room:
        stem, dot, ext = name.rpartition(".")
        ext = f".{ext}" if dot and len(ext) <= 16 else ""
        name = (stem if ext else name).encode()[: room - len(ext.encode())].decode("utf-8", "ignore") + ext
    return head + name


def parent_prefix(kind: str, parent_id: str, prefix: str = c.ARCHIVE_PREFIX) -> str:
    return f"{prefix}{kind}/{parent_id}/"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status else None


class ArchiveStore:
    """Every S3 call of the archive goes through `_call`, the one place S3 errors become relay errors."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        part_size: int = c.DEFAULT_ARCHIVE_PART_BYTES,
        prefix: str = c.ARCHIVE_PREFIX,
        staging_prefix: str = c.STAGING_PREFIX,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self.prefix = prefix
        self.staging_prefix = staging_prefix
        self._uploads = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="relay-parts")

    def key(self, kind: str, parent_id: str, attachment_id: str, file_name: str) -> str:
        return archive_key(kind, parent_id, attachment_id, file_name, self.prefix)

    def _call(self, what: str, key: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ClientError as exc:
            raise ObjectStoreError(f"{what} s3://{self.bucket}/{key} failed: {_code(exc) or _http(exc)}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"{what} s3://{self.bucket}/{key} failed: {type(exc).__name__}") from exc

    # -- reading -------------------------------------------------------------------------------------

    def copies(self, kind: str, parent_id: str) -> dict[str, int]:
        """Every archived key under the parent, with its size: one listing, however many attachments."""
        prefix = parent_prefix(kind, parent_id, self.prefix)
        found: dict[str, int] = {}
        token: dict[str, str] = {}
        for _ in range(10_000):  # pages of 1,000 keys: a bound far past any real form
            page = self._call(
                "listing", prefix, partial(self.client.list_objects_v2, Bucket=self.bucket, Prefix=prefix, **token)
            )
            found.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        return found

    def find(self, key: str) -> ArchivedCopy | None:
        """The copy at `key`, or None. Without ListBucket S3 answers a missing key 403: the listing decides then."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _http(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            if _http(exc) == 403 and key not in self._listed(key):
                return None
            raise ObjectStoreError(f"HEAD s3://{self.bucket}/{key} failed: {_code(exc) or _http(exc)}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"HEAD s3://{self.bucket}/{key} failed: {type(exc).__name__}") from exc
        meta = {k.lower(): decode_metadata(v) for k, v in (head.get("Metadata") or {}).items()}
        version = head.get("VersionId")
        return ArchivedCopy(
            key=key,
            size=int(head["ContentLength"]),
            attachment_id=meta.get(META_ATTACHMENT),
            sha256=meta.get(META_SHA256),
            version_id=version if version not in (None, "null") else None,
        )

    def _listed(self, key: str) -> set[str]:
        page = self._call("listing", key, lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=key))
        return {o["Key"] for o in page.get("Contents", [])}

    def presign(self, copy: ArchivedCopy, expires_in: int, file_name: str, presigner: Any = None) -> str:
        """A pre-signed GET of exactly this version, offered for download under the attachment's own name."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": copy.key,
            "ResponseContentDisposition": _disposition(file_name),
        }
        if copy.version_id:
            params["VersionId"] = copy.version_id
        client = presigner or self.client
        url: str = self._call(
            "pre-signing",
            copy.key,
            lambda: client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in),
        )
        return url

    # -- writing -------------------------------------------------------------------------------------

    def write(
        self,
        key: str,
        chunks: Iterable[bytes],
        meta: CopyMetadata,
        *,
        content_type: str,
        replace: bool,
        expected_size: int | None = None,
    ) -> tuple[ArchivedCopy, bool]:
        """Stream `chunks` to `key`; return the copy and whether this call wrote it.

        The key is written once, whole, with its metadata: S3 needs the metadata before the bytes and the
        sha256 is known only after them, so a file larger than one part streams to a staging key first (its
        parts uploading while the next ones download) and is then copied server-side (CopyObject) to its key.
        `replace=False` writes with
        `If-None-Match: *`: when another writer made the copy first, theirs is kept and returned (False).
        Whatever `chunks` raises (a broken download, a deadline) abandons the copy and leaves no object.
        """
        digest = hashlib.sha256()
        size = 0
        parts = _parts(chunks, self.part_size)
        first = next(parts, b"")
        digest.update(first)
        size += len(first)
        second = next(parts, None)
        if second is None:
            body = first
            _check_size(size, expected_size)
            return self._put(key, body, meta.encoded(digest.hexdigest()), content_type, replace, size)
        staging = f"{self.staging_prefix}{uuid.uuid4().hex}"
        upload_id = self._call(
            "starting a staging upload",
            staging,
            lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=staging)["UploadId"],
        )
        staged_version: str | None = None
        in_flight: deque[Future[str]] = deque()
        staged = False
        try:
            done: list[dict[str, Any]] = []
            for number, part in enumerate(_chain(first, second, parts), start=1):
                if number > 1:
                    digest.update(part)
                    size += len(part)
                # Parts go up while the next ones download; at most PARTS_IN_FLIGHT are held in memory.
                while len(in_flight) >= PARTS_IN_FLIGHT:
                    done.append({"PartNumber": len(done) + 1, "ETag": in_flight.popleft().result()})
                in_flight.append(self._uploads.submit(self._upload_part, staging, upload_id, number, part))
            while in_flight:
                done.append({"PartNumber": len(done) + 1, "ETag": in_flight.popleft().result()})
            _check_size(size, expected_size)
            completed = self._call(
                "completing the staging upload",
                staging,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=staging, UploadId=upload_id, MultipartUpload={"Parts": done}
                ),
            )
            upload_id, staged = "", True
            staged_version = completed.get("VersionId")
            return self._copy_from(
                staging, staged_version, key, meta.encoded(digest.hexdigest()), content_type, replace, size
            )
        finally:
            for pending in in_flight:
                pending.cancel()
            wait(in_flight)
            if upload_id:
                self._abort(staging, upload_id)
            if staged:  # nothing to delete otherwise, and a DELETE of no version leaves a delete marker
                self._discard(staging, staged_version)

    def _upload_part(self, key: str, upload_id: str, number: int, part: bytes) -> str:
        answer = self._call(
            f"uploading part {number} of",
            key,
            lambda: self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
            ),
        )
        return str(answer["ETag"])

    def _put(
        self, key: str, body: bytes, metadata: dict[str, str], content_type: str, replace: bool, size: int
    ) -> tuple[ArchivedCopy, bool]:
        condition = {} if replace else {"IfNoneMatch": "*"}
        try:
            answer = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, Metadata=metadata, ContentType=content_type, **condition
            )
        except ClientError as exc:
            if _is_precondition(exc):
                return self._theirs(key), False
            raise ObjectStoreError(f"PUT s3://{self.bucket}/{key} failed: {_code(exc) or _http(exc)}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"PUT s3://{self.bucket}/{key} failed: {type(exc).__name__}") from exc
        return self._ours(key, size, metadata, answer), True

    def _copy_from(
        self,
        staging: str,
        staged_version: str | None,
        key: str,
        metadata: dict[str, str],
        content_type: str,
        replace: bool,
        size: int,
    ) -> tuple[ArchivedCopy, bool]:
        """One server-side CopyObject from staging to the key, with the metadata (CopyObject takes up to 5 GiB;
        iTwin's files stop at 30 MB). `If-None-Match: *` keeps a copy another writer finished first."""
        if size > MAX_COPY_BYTES:
            raise ObjectStoreError(f"{key}: {size} bytes is over CopyObject's 5 GiB")
        if not replace and self.find(key) is not None:
            return self._theirs(key), False  # the common race, seen before the copy (moto ignores the condition)
        source: dict[str, str] = {"Bucket": self.bucket, "Key": staging}
        if staged_version and staged_version != "null":
            source["VersionId"] = staged_version
        condition = {} if replace else {"IfNoneMatch": "*"}
        try:
            answer = self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource=source,
                MetadataDirective="REPLACE",
                Metadata=metadata,
                ContentType=content_type,
                **condition,
            )
        except ClientError as exc:
            if _is_precondition(exc):
                return self._theirs(key), False
            raise ObjectStoreError(f"copying to s3://{self.bucket}/{key} failed: {_code(exc) or _http(exc)}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"copying to s3://{self.bucket}/{key} failed: {type(exc).__name__}") from exc
        return self._ours(key, size, metadata, answer), True

    def _ours(self, key: str, size: int, metadata: Mapping[str, str], answer: Mapping[str, Any]) -> ArchivedCopy:
        version = answer.get("VersionId")
        return ArchivedCopy(
            key=key,
            size=size,
            attachment_id=decode_metadata(metadata[META_ATTACHMENT]),
            sha256=metadata[META_SHA256],
            version_id=version if version not in (None, "null") else None,
        )

    def _theirs(self, key: str) -> ArchivedCopy:
        theirs = self.find(key)
        if theirs is None:  # written and deleted again in between: let the caller try once more
            raise ObjectStoreError(f"s3://{self.bucket}/{key} was written by another copy and is gone again")
        return theirs

    def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: the bucket's lifecycle aborts what this cannot (AbortIncompleteMultipartUpload)."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def _discard(self, staging: str, version: str | None) -> None:
        """Remove the staged bytes for good (the version, not a delete marker); lifecycle expires leftovers."""
        args = {"VersionId": version} if version and version != "null" else {}
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.delete_object(Bucket=self.bucket, Key=staging, **args)


def _is_precondition(exc: ClientError) -> bool:
    return _code(exc) in ("PreconditionFailed", "412") or _http(exc) == 412


def _check_size(size: int, expected: int | None) -> None:
    if expected is not None and size != expected:
        raise IncompleteDownloadError(f"the download held {size} bytes; the listing said {expected}")


def _parts(chunks: Iterable[bytes], part_size: int) -> Iterator[bytes]:
    """Re-block a stream into parts of exactly `part_size` bytes (the last may be shorter): one part in memory."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= part_size:
            with memoryview(buffer) as view:
                part = bytes(view[:part_size])  # one copy: slicing the bytearray itself would make two
            del buffer[:part_size]
            yield part
    if buffer:
        yield bytes(buffer)


def _chain(first: bytes, second: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield second
    yield from rest


def _disposition(file_name: str) -> str:
    ascii_name = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in file_name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(file_name, safe='')}"
