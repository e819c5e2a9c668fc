"""What an S3 notification (delivered through SQS) says: which object versions were created."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from relay.errors import MalformedMessageError

# Far above any real notification (one record is about 1 KB); bounds the parser's work on junk.
MAX_BODY_CHARS = 256 * 1024
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


# What makes two notifications one upload, for Powertools idempotency: the version, or the eTag where the bucket
# keeps none. Never both: a re-sent notification that lacks the eTag is still the same version, and must wait for
# the first rather than relay it a second time beside it.
IDEMPOTENCY_KEY = "[bucket, key, version_id || etag]"


@dataclass(frozen=True)
class Upload:
    """One uploaded object version: the unit of exactly-once."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None = None

    @property
    def version(self) -> str:
        # Versioned buckets name each upload by versionId; unversioned ones by eTag.
        return self.version_id or f"etag:{self.etag}"

    @property
    def identity(self) -> str:
        return f"{self.bucket}/{self.key}#{self.version}"


@dataclass(frozen=True)
class Notification:
    """The creations in one message; what was not a creation; and the records that could not be read."""

    uploads: list[Upload] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    test_event: bool = False


def parse_message(body: str) -> Notification:
    """Read one SQS message body. Raises MalformedMessageError naming what is wrong."""
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        raise MalformedMessageError(f"message body is not text of at most {MAX_BODY_CHARS} characters")
    try:
        payload = json.loads(body)
    except (TypeError, ValueError, RecursionError):
        raise MalformedMessageError("message body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedMessageError("message body is not a JSON object")
    if payload.get("Event") == "s3:TestEvent":
        return Notification(test_event=True)
    records = payload.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedMessageError("message has no Records")
    notification = Notification()
    for index, record in enumerate(records):
        try:
            upload = _upload(index, record)
        except MalformedMessageError as error:
            # One bad record must not stop the good ones beside it: they are relayed, it is reported.
            notification.malformed.append(error.message)
            continue
        if isinstance(upload, str):
            notification.ignored.append(upload)
        else:
            notification.uploads.append(upload)
    return notification


def _upload(index: int, record: object) -> Upload | str:
    """One record: an Upload, the reason it is not an upload, or MalformedMessageError."""
    try:
        s3 = record["s3"]  # type: ignore[index]
        name = record.get("eventName")  # type: ignore[attr-defined]
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        raw_key = obj["key"]
    except (KeyError, TypeError, AttributeError):
        raise MalformedMessageError(f"record {index} lacks s3.bucket.name or s3.object.key") from None
    if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
        # Only creations are uploads; the template subscribes to nothing else.
        return f"record {index}: eventName {name!r} is not an ObjectCreated event"
    if not isinstance(bucket, str) or not isinstance(raw_key, str) or not isinstance(obj, dict):
        raise MalformedMessageError(f"record {index} has a non-string bucket or key")
    version_id, etag = _text(obj.get("versionId")), _text(obj.get("eTag"))
    if version_id == "null":
        version_id = None  # versioning suspended: every such upload is "null", so the eTag must name it
    if version_id is None and etag is None:
        raise MalformedMessageError(f"record {index} has neither a versionId nor an eTag to identify the upload")
    size = obj.get("size")
    return Upload(
        bucket=bucket,
        key=_decode_key(index, raw_key),
        version_id=version_id,
        etag=etag,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
    )


def _decode_key(index: int, raw_key: str) -> str:
    """S3 sends the key percent-encoded UTF-8: anything else names no object, so it is never guessed at."""
    if _BAD_ESCAPE.search(raw_key):
        raise MalformedMessageError(
            f"record {index} has a key that is not percent-encoded ('%' without two hex digits)"
        )
    try:
        return unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError:
        raise MalformedMessageError(f"record {index} has a key whose percent-encoding is not UTF-8") from None


def _text(value: object) -> str | None:
    return value.strip('"') or None if isinstance(value, str) else None
