"""What an S3 notification means: the upload's identity, its target, and its caption and binding."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any
from urllib.parse import unquote_plus

from relay.exceptions import InvalidUploadError, RelayError
from relay.itwin import KINDS, Kind

MAX_ID_CHARS = 128
MAX_FILE_NAME_CHARS = 255


class MalformedMessageError(RelayError):
    """The SQS message is not an S3 notification we can read."""

    code = "MalformedMessage"


@dataclass(frozen=True)
class Upload:
    """One uploaded object version: the unit of exactly-once."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None = None

    @property
    def identity(self) -> str:
        # Versioned buckets name each upload by versionId; unversioned ones by eTag.
        return f"{self.bucket}/{self.key}#{self.version_id or 'etag:' + (self.etag or '')}"

    def as_idempotency_data(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "version": self.version_id or f"etag:{self.etag}"}


@dataclass(frozen=True)
class Target:
    kind: Kind
    parent_id: str
    file_name: str

    def describe(self) -> str:
        return f"{self.kind}/{self.parent_id}"


def parse_message(body: str) -> list[Upload]:
    """Uploads in one SQS message body; [] for S3's s3:TestEvent. Raises MalformedMessageError."""
    try:
        payload = json.loads(body)
    except (TypeError, ValueError):
        raise MalformedMessageError("message body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedMessageError("message body is not a JSON object")
    if payload.get("Event") == "s3:TestEvent":
        return []
    records = payload.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedMessageError("message has no Records")
    uploads = []
    for index, record in enumerate(records):
        try:
            s3 = record["s3"]
            name = record.get("eventName", "")
            bucket = s3["bucket"]["name"]
            obj = s3["object"]
            raw_key = obj["key"]
        except (KeyError, TypeError):
            raise MalformedMessageError(f"record {index} lacks s3.bucket.name or s3.object.key") from None
        if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
            continue  # only creations are uploads; the template subscribes to nothing else
        if not isinstance(bucket, str) or not isinstance(raw_key, str):
            raise MalformedMessageError(f"record {index} has a non-string bucket or key")
        size = obj.get("size")
        uploads.append(
            Upload(
                bucket=bucket,
                key=unquote_plus(raw_key),
                version_id=obj.get("versionId") or None,
                etag=(obj.get("eTag") or "").strip('"') or None,
                size=size if isinstance(size, int) else None,
            )
        )
    return uploads


def _check_segment(value: str, what: str, limit: int) -> None:
    if not value or not value.strip():
        raise InvalidUploadError(f"the {what} is empty", code="EmptyKeySegment")
    if value in (".", ".."):
        raise InvalidUploadError(f"the {what} is {value!r}", code="DotKeySegment")
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise InvalidUploadError(f"the {what} holds control character U+{ord(bad):04X}", code="ControlCharacter")
    if len(value) > limit:
        raise InvalidUploadError(f"the {what} is {len(value)} characters; at most {limit}", code="KeySegmentTooLong")


def parse_target(key: str) -> Target:
    """`issues/<issueId>/<fileName>` or `forms/<formId>/<fileName>`, already URL-decoded."""
    prefix, _, rest = key.partition("/")
    if prefix not in KINDS:
        raise InvalidUploadError(
            f"key {key!r} is not under a known prefix ({', '.join(k + '/' for k in KINDS)})", code="UnknownPrefix"
        )
    parent_id, _, file_name = rest.partition("/")
    what = "issue id" if prefix == "issues" else "form id"
    _check_segment(parent_id, what, MAX_ID_CHARS)
    if "/" in file_name:
        raise InvalidUploadError(
            f"key {key!r} has folders below the {what}; expected {prefix}/<id>/<fileName>", code="NestedKey"
        )
    _check_segment(file_name, "file name", MAX_FILE_NAME_CHARS)
    kind: Kind = "issues" if prefix == "issues" else "forms"
    return Target(kind, parent_id, unicodedata.normalize("NFC", file_name))


def decode_metadata(value: str | None) -> str | None:
    """S3 user metadata is ASCII on the wire; SDKs send other text RFC 2047-encoded (=?UTF-8?B?...?=)."""
    if value is None:
        return None
    try:
        decoded = str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        decoded = value
    return decoded or None
