"""S3 side of a transfer: HEAD the upload, stream its bytes, and tag its outcome (keeping other tags)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from functools import partial
from typing import IO, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from relay.aws.s3events import Upload
from relay.errors import ObjectGoneError, ObjectStoreError
from relay.observability import logger

TAG_STATUS, TAG_ATTACHMENT, TAG_ERROR = "relay-status", "relay-attachment-id", "relay-error"
MAX_TAGS = 10
T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    version_id: str | None
    etag: str | None
    content_type: str
    # User metadata, lower-cased keys, RFC 2047 values decoded.
    metadata: Mapping[str, str] = field(default_factory=dict)


class SizedStream:
    """A GetObject body with a length, so requests sends Content-Length and streams it in blocks."""

    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self._size = size

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int = -1) -> bytes:
        data: bytes = self._body.read(amount if amount and amount > 0 else None)
        return data

    def close(self) -> None:
        self._body.close()


def decode_metadata(value: str) -> str:
    """S3 user metadata is ASCII on the wire; SDKs send other text RFC 2047-encoded (=?UTF-8?B?...?=).

    Text that does not decode is kept as it came, and the reason is logged.
    """
    try:
        decoded = str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("metadata value is not valid RFC 2047; kept as sent", extra={"error": type(exc).__name__})
        return value
    if value.strip() and not decoded.strip():
        # The email package turns an undecodable encoded word into nothing, silently.
        logger.warning("metadata value decodes to nothing; kept as sent", extra={"error": "EmptyEncodedWord"})
        return value
    return decoded


def _version_args(upload: Upload) -> dict[str, str]:
    return {"VersionId": upload.version_id} if upload.version_id else {}


def _is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return (
        code in ("404", "NoSuchKey", "NoSuchVersion", "NotFound")
        or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
    )


def _status(exc: BaseException | None) -> int | None:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    return None


class ObjectStore:
    """Every S3 call goes through `_call`, the one place S3 errors become relay errors."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _call(self, what: str, upload: Upload, call: Callable[[], T]) -> T:
        where = f"s3://{upload.bucket}/{upload.key}"
        try:
            return call()
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectGoneError(f"{where} no longer exists") from None
            raise ObjectStoreError(f"{what} {where} failed: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"{what} {where} failed: {type(exc).__name__}") from exc

    def head(self, upload: Upload) -> ObjectInfo:
        try:
            head = self._call(
                "HEAD",
                upload,
                lambda: self.client.head_object(Bucket=upload.bucket, Key=upload.key, **_version_args(upload)),
            )
        except ObjectStoreError as error:
            # S3 answers a HEAD of a missing key or version 403 when ListBucket does not cover it: ask the
            # listing (which the role may do under the upload prefixes) whether the upload still exists.
            if _status(error.__cause__) == 403 and not self.exists(upload):
                raise ObjectGoneError(f"s3://{upload.bucket}/{upload.key} no longer exists") from None
            raise
        metadata = {k.lower(): decode_metadata(v) for k, v in (head.get("Metadata") or {}).items()}
        return ObjectInfo(
            size=int(head["ContentLength"]),
            version_id=head.get("VersionId") if head.get("VersionId") not in (None, "null") else None,
            etag=(head.get("ETag") or "").strip('"') or None,
            content_type=head.get("ContentType") or "application/octet-stream",
            metadata=metadata,
        )

    def exists(self, upload: Upload) -> bool:
        """Whether the upload's version (or, unversioned, its eTag) is still listed under its key."""
        markers: dict[str, str] = {}
        for _ in range(1000):  # pages of 1,000 versions: a bound, far past any real key's history
            answer = self._call("listing", upload, partial(self._versions, upload, dict(markers)))
            for version in answer.get("Versions", []):
                if version.get("Key") != upload.key:
                    continue
                if upload.version_id is not None and version.get("VersionId") == upload.version_id:
                    return True
                if upload.version_id is None and version.get("IsLatest"):
                    return upload.etag is None or str(version.get("ETag", "")).strip('"') == upload.etag
            if not answer.get("IsTruncated"):
                return False
            markers = {"KeyMarker": answer["NextKeyMarker"], "VersionIdMarker": answer["NextVersionIdMarker"]}
        return False

    def _versions(self, upload: Upload, markers: dict[str, str]) -> Any:
        return self.client.list_object_versions(Bucket=upload.bucket, Prefix=upload.key, **markers)

    def open(self, upload: Upload, size: int) -> IO[bytes]:
        """A fresh streaming body for each attempt; nothing is read into memory or onto /tmp."""
        response = self._call(
            "GET",
            upload,
            lambda: self.client.get_object(Bucket=upload.bucket, Key=upload.key, **_version_args(upload)),
        )
        return SizedStream(response["Body"], size)  # type: ignore[return-value]

    def open_range(self, upload: Upload, start: int, length: int) -> IO[bytes]:
        """A streaming body for bytes [start, start + length) of the upload's version: one ranged GET."""
        response = self._call(
            "GET",
            upload,
            lambda: self.client.get_object(
                Bucket=upload.bucket,
                Key=upload.key,
                Range=f"bytes={start}-{start + length - 1}",
                **_version_args(upload),
            ),
        )
        return SizedStream(response["Body"], length)  # type: ignore[return-value]

    def tag(
        self,
        upload: Upload,
        status: str,
        attachment_id: str | None,
        error_code: str | None,
        extra: Mapping[str, str | None] | None = None,
    ) -> None:
        """Set relay-* tags, keeping the user's own tags (PutObjectTagging replaces the whole set)."""
        args = {"Bucket": upload.bucket, "Key": upload.key, **_version_args(upload)}
        existing = self._call("tagging", upload, lambda: self.client.get_object_tagging(**args)).get("TagSet", [])
        ours = {TAG_STATUS: status, TAG_ATTACHMENT: attachment_id, TAG_ERROR: error_code, **(extra or {})}
        kept = [t for t in existing if t["Key"] not in ours]
        tags = kept + [{"Key": k, "Value": v[:256]} for k, v in ours.items() if v]
        if len(tags) > MAX_TAGS:
            # S3 allows 10 tags: ours win over the oldest of the user's (the record keeps everything).
            tags = tags[len(tags) - MAX_TAGS :]
        self._call("tagging", upload, lambda: self.client.put_object_tagging(**args, Tagging={"TagSet": tags}))
