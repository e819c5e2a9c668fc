"""S3 side of a transfer: HEAD the upload, stream its bytes, and tag its outcome (keeping other tags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from relay.exceptions import RelayError
from relay.uploads import Upload, decode_metadata

TAG_STATUS, TAG_ATTACHMENT, TAG_ERROR = "relay-status", "relay-attachment-id", "relay-error"
MAX_TAGS = 10


class ObjectGoneError(RelayError):
    """The object (or that version of it) was deleted before it was processed."""

    code = "ObjectDeleted"


class ObjectStoreError(RelayError):
    code = "S3Error"
    retryable = True


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    version_id: str | None
    etag: str | None
    content_type: str
    caption: str | None
    binding: str | None


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


def _version_args(upload: Upload) -> dict[str, str]:
    return {"VersionId": upload.version_id} if upload.version_id else {}


def _is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return (
        code in ("404", "NoSuchKey", "NoSuchVersion", "NotFound")
        or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
    )


class ObjectStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def head(self, upload: Upload) -> ObjectInfo:
        try:
            head = self.client.head_object(Bucket=upload.bucket, Key=upload.key, **_version_args(upload))
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectGoneError(f"s3://{upload.bucket}/{upload.key} no longer exists") from None
            raise ObjectStoreError(
                f"HEAD s3://{upload.bucket}/{upload.key} failed: {exc.response['Error'].get('Code')}"
            ) from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"HEAD s3://{upload.bucket}/{upload.key} failed: {type(exc).__name__}") from exc
        metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return ObjectInfo(
            size=int(head["ContentLength"]),
            version_id=head.get("VersionId") if head.get("VersionId") not in (None, "null") else None,
            etag=(head.get("ETag") or "").strip('"') or None,
            content_type=head.get("ContentType") or "application/octet-stream",
            caption=decode_metadata(metadata.get("caption")),
            binding=decode_metadata(metadata.get("binding")),
        )

    def open(self, upload: Upload, size: int) -> IO[bytes]:
        """A fresh streaming body for each attempt; nothing is read into memory or onto /tmp."""
        try:
            response = self.client.get_object(Bucket=upload.bucket, Key=upload.key, **_version_args(upload))
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectGoneError(f"s3://{upload.bucket}/{upload.key} no longer exists") from None
            raise ObjectStoreError(f"GET s3://{upload.bucket}/{upload.key} failed") from exc
        return SizedStream(response["Body"], size)  # type: ignore[return-value]

    def tag(self, upload: Upload, status: str, attachment_id: str | None, error_code: str | None) -> None:
        """Set relay-* tags, keeping the user's own tags (PutObjectTagging replaces the whole set)."""
        args = {"Bucket": upload.bucket, "Key": upload.key, **_version_args(upload)}
        try:
            existing = self.client.get_object_tagging(**args).get("TagSet", [])
            ours = {TAG_STATUS: status, TAG_ATTACHMENT: attachment_id, TAG_ERROR: error_code}
            kept = [t for t in existing if t["Key"] not in ours]
            tags = kept + [{"Key": k, "Value": v[:256]} for k, v in ours.items() if v]
            if len(tags) > MAX_TAGS:
                # S3 allows 10 tags: ours win over the oldest of the user's (the record keeps everything).
                tags = tags[len(tags) - MAX_TAGS :]
            self.client.put_object_tagging(**args, Tagging={"TagSet": tags})
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectGoneError(f"s3://{upload.bucket}/{upload.key} no longer exists") from None
            raise ObjectStoreError(f"tagging s3://{upload.bucket}/{upload.key} failed") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"tagging s3://{upload.bucket}/{upload.key} failed: {type(exc).__name__}") from exc
