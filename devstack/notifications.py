"""S3 notifications as AWS sends them: moto's get the versionId and sequencer it omits; samples get local versions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
# A versioned bucket's notification names the version the request created, and a sequencer that
# orders the events of one key. moto 5 sends neither, so without this every local run would use the
# relay's eTag identity, a path AWS never takes for the (versioned) upload bucket.


@dataclass(frozen=True)
class S3Object:
    """One object version that a notification names."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None


def _payload(body: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (TypeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def is_test_event(body: str) -> bool:
    """S3 sends one `s3:TestEvent` to the queue when the bucket's notifications are configured."""
    payload = _payload(body)
    return payload is not None and payload.get("Event") == "s3:TestEvent"


def _creations(payload: dict[str, Any]) -> list[dict[str, Any]]:
    records = payload.get("Records")
    if not isinstance(records, list):
        return []
    found = []
    for record in records:
        if not isinstance(record, dict) or not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3")
        if isinstance(s3, dict) and isinstance(s3.get("object"), dict) and isinstance(s3.get("bucket"), dict):
            found.append(record)
    return found


def objects_in(body: str) -> list[S3Object]:
    """The created object versions a notification body names; [] for anything else."""
    payload = _payload(body)
    if payload is None:
        return []
    result = []
    for record in _creations(payload):
        obj, bucket = record["s3"]["object"], record["s3"]["bucket"]
        if isinstance(obj.get("key"), str) and isinstance(bucket.get("name"), str):
            result.append(
                S3Object(
                    bucket["name"],
                    unquote_plus(obj["key"]),
                    obj.get("versionId") or None,
                    (obj.get("eTag") or "").strip('"') or None,
                )
            )
    return result


def _versions(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """The key's versions, newest first (ListObjectVersions' order), without its neighbours by prefix."""
    versions: list[dict[str, Any]] = []
    args: dict[str, str] = {"Bucket": bucket, "Prefix": key}
    while True:
        page = s3.list_object_versions(**args)
        versions += [v for v in page.get("Versions", []) if v["Key"] == key]
        if not page.get("IsTruncated"):
            return versions
        args.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])


def _event_time(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def created_version(s3: Any, bucket: str, key: str, etag: str, event_time: datetime | None) -> str | None:
    """The version a put of these bytes created: the newest with this eTag that is not newer than the event.

    S3 reports LastModified to the second, so two puts of identical bytes to one key within the same
    second both resolve to the newer version. None when the version is gone or the bucket is unversioned.
    """
    try:  # the usual case, and O(1) in moto: the put made the key's current version
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - deleted, or a delete marker: the listing below decides
        head = {}
    if str(head.get("ETag", "")).strip('"') == etag and head.get("VersionId") not in (None, "null"):
        modified = head.get("LastModified")
        if event_time is None or not isinstance(modified, datetime) or modified <= event_time:
            return str(head["VersionId"])
    for version in _versions(s3, bucket, key):
        if str(version.get("ETag", "")).strip('"') != etag or version.get("VersionId") in (None, "null"):
            continue
        modified = version.get("LastModified")
        if event_time is None or not isinstance(modified, datetime) or modified <= event_time:
            return str(version["VersionId"])
    return None


def complete_notification(s3: Any, body: str) -> str:
    """Add the versionId (and a sequencer) that AWS would have sent to each creation record lacking them.

    Bodies that are not S3 notifications, and records that already name a version, are left as they are.
    """
    payload = _payload(body)
    if payload is None:
        return body
    changed = False
    for record in _creations(payload):
        obj = record["s3"]["object"]
        etag = (obj.get("eTag") or "").strip('"')
        if obj.get("versionId") or not etag or not isinstance(obj.get("key"), str):
            continue
        event_time = _event_time(record)
        version = created_version(s3, record["s3"]["bucket"]["name"], unquote_plus(obj["key"]), etag, event_time)
        if version is None:
            continue  # deleted before delivery: AWS would name a version that no longer exists either way
        obj["versionId"] = version
        if "sequencer" not in obj and event_time is not None:
            # Hex, increasing per key with the event time, as AWS's is (its exact value is opaque).
            obj["sequencer"] = f"{int(event_time.timestamp() * 1000):016X}"
        changed = True
    return json.dumps(payload) if changed else body


def localize_event(s3: Any, event: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A sample Lambda event whose S3 records name versions that exist in the local bucket, and what changed.

    A sample's versionId is AWS-shaped and cannot exist locally. Each record whose version is not a
    version of its key gets the local one with the record's eTag (or the key's latest, without an eTag).
    The event is copied, never changed in place.
    """
    event = json.loads(json.dumps(event))
    notes: list[str] = []
    for sqs_record in event.get("Records", []):
        if not isinstance(sqs_record, dict) or not isinstance(sqs_record.get("body"), str):
            continue
        payload = _payload(sqs_record["body"])
        if payload is None:
            continue
        changed = False
        for record in _creations(payload):
            obj, bucket = record["s3"]["object"], record["s3"]["bucket"].get("name")
            if not isinstance(obj.get("key"), str) or not isinstance(bucket, str):
                continue
            key = unquote_plus(obj["key"])
            etag = (obj.get("eTag") or "").strip('"')
            try:
                versions = _versions(s3, bucket, key)
            except Exception as exc:  # noqa: BLE001 - a note for the user, then the function decides
                notes.append(f"s3://{bucket}/{key}: cannot list its versions ({type(exc).__name__})")
                continue
            if obj.get("versionId") in {v["VersionId"] for v in versions}:
                continue
            match = next((v for v in versions if not etag or v["ETag"].strip('"') == etag), None)
            if match is None:
                what = f"no version with eTag {etag}" if versions and etag else "no such object"
                notes.append(f"s3://{bucket}/{key}: {what} in the local bucket; upload it first")
                continue
            notes.append(
                f"s3://{bucket}/{key}: versionId {obj.get('versionId') or '(none)'} -> {match['VersionId']} "
                "(the local version with the event's eTag)"
            )
            obj["versionId"] = match["VersionId"]
            changed = True
        if changed:
            sqs_record["body"] = json.dumps(payload)
    return event, notes
