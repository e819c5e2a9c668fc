"""Bad input, one table per kind (issue 11, part 2): every case names its error code, what the user sees of it
(a tag, a record or an HTTP answer), and shows that the good work beside it in the same batch was not touched.

Everything runs over real HTTP against moto server and the sandbox. An S3 case puts its bad upload and a good one
under another prefix, and hands both to the deployed function in one Lambda batch (or one container's flow when the
case needs its own environment); a vendor case faults only `itwin.issues.*`, so the good upload under `forms/` must
attach whatever the bad one meets; an HTTP case sends the bad request and then a good one.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote_plus

import pytest

from relay import constants as c
from relay.errors import RelayError
from relay.flows.itwin_webhooks import sign
from relay.vendors.itwin import ITwinClient
from sandbox.seed import WEBHOOK_SECRET
from tests.integration.conftest import Api, Harness, lambda_sqs_event, sha256
from tests.integration.test_itwin_webhooks import Hooks

pytestmark = pytest.mark.integration

PHOTO = b"\x89PNG bad-input probe " * 256  # 5 KiB
GOOD = b"%PDF-1.4 the good upload beside the bad one"
NO_TAG: dict[str, str] = {}


# -- driving one batch: the bad upload and a good one ----------------------------------------------------------------


@dataclass
class Sibling:
    """The good upload of a batch: a form attachment that must arrive whatever happens to the bad one."""

    form: str
    key: str
    version: str

    @classmethod
    def make(cls, h: Harness) -> Sibling:
        form = h.new_parent("forms")
        key = f"forms/{form}/good.pdf"
        return cls(form, key, h.put(key, GOOD))

    def message(self, h: Harness) -> str:
        return notification(h.bucket, self.key, h.etag(self.key), self.version)

    def record(self, h: Harness) -> dict[str, Any]:
        return {
            "bucket": {"name": h.bucket},
            "object": {"key": quote_plus(self.key, safe="/"), "versionId": self.version},
        }

    def assert_attached(self, h: Harness) -> None:
        (att,) = h.attachments(self.form, "forms")
        assert att["sha256"] == sha256(GOOD)
        assert h.tags(self.key, self.version) == {"relay-status": "attached", "relay-attachment-id": att["id"]}
        assert h.record_for(self.key)["status"] == "attached"


def notification(bucket: str, key: str, etag: str | None, version: str | None, raw_key: str | None = None) -> str:
    """An S3 notification for one object, its key percent-encoded as S3 encodes it (or exactly `raw_key`)."""
    obj: dict[str, Any] = {"key": raw_key if raw_key is not None else quote_plus(key, safe="/")}
    if etag:
        obj["eTag"] = etag
    if version:
        obj["versionId"] = version
    return json.dumps(
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}]}
    )


def run_batch(
    h: Harness,
    bodies: list[str],
    *,
    env: dict[str, str] | None = None,
    receive_count: int = 1,
    flow: Any = None,
    **injected: Any,
) -> list[int]:
    """Hand the messages to the function as one Lambda batch; the indexes of those that return to the queue.

    Without `env`, collaborators or a `flow` it is the deployed handler; otherwise one container's flow.
    """
    if env is None and not injected and flow is None:
        records = [lambda_sqs_event(b, f"m-{i}", receive_count)["Records"][0] for i, b in enumerate(bodies)]
        result = h.invoke({"Records": records})
        return sorted(int(f["itemIdentifier"].removeprefix("m-")) for f in result["batchItemFailures"])
    flow = flow or h.flow(env, **injected)
    failed = []
    for i, body in enumerate(bodies):
        try:
            flow.handle_message(f"m-{i}", body, receive_count)
        except RelayError:
            failed.append(i)
    return failed


def logged(logs: Any, message: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.getvalue().splitlines() if f'"{message}"' in line]


# -- SQS bodies ------------------------------------------------------------------------------------------------------


def _record_of(h: Harness, sibling: Sibling, **changes: Any) -> dict[str, Any]:
    return {"eventName": "ObjectCreated:Put", "s3": sibling.record(h), **changes}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass(frozen=True)
class BodyCase:
    body: Callable[[Harness, Sibling], str]
    code: str | None  # the code the function logs; None: nothing is wrong with the message
    returns: bool  # the message goes back to the queue (and, after MaxReceiveCount, to the DLQ)
    logged_as: str = "malformed message"


SQS_BODIES = {
    "sqs-not-json": BodyCase(lambda h, s: "this is not an S3 event", "MalformedMessage", True),
    "sqs-json-array": BodyCase(lambda h, s: json.dumps([json.loads(s.message(h))]), "MalformedMessage", True),
    "sqs-json-string": BodyCase(lambda h, s: json.dumps("Records"), "MalformedMessage", True),
    "sqs-no-records": BodyCase(lambda h, s: json.dumps({"Type": "Notification"}), "MalformedMessage", True),
    "sqs-empty-records": BodyCase(lambda h, s: json.dumps({"Records": []}), "MalformedMessage", True),
    "sqs-record-without-s3": BodyCase(
        lambda h, s: json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
        "MalformedMessage",
        True,
        "malformed records",
    ),
    "sqs-record-without-version-or-etag": BodyCase(
        lambda h, s: json.dumps(
            {
                "Records": [
                    {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": h.bucket}, "object": {"key": "a"}}}
                ]
            }
        ),
        "MalformedMessage",
        True,
        "malformed records",
    ),
    "sqs-wrong-event-name": BodyCase(
        lambda h, s: json.dumps({"Records": [_record_of(h, s, eventName="ObjectRemoved:Delete")]}),
        None,
        False,
        "ignoring a record that is not an upload",
    ),
    "sqs-s3-test-event": BodyCase(
        lambda h, s: json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": h.bucket}),
        None,
        False,
        "skipping s3:TestEvent",
    ),
    "sqs-deeply-nested-json": BodyCase(lambda h, s: _nested(50_000), "MalformedMessage", True),
    "sqs-300-KB-body": BodyCase(lambda h, s: json.dumps({"pad": "x" * 300_000}), "MalformedMessage", True),
}


@pytest.mark.parametrize("case", SQS_BODIES.values(), ids=SQS_BODIES.keys())
def test_a_bad_sqs_body_fails_only_its_own_message(harness: Harness, logs: Any, case: BodyCase):
    sibling = Sibling.make(harness)
    failed = run_batch(harness, [case.body(harness, sibling), sibling.message(harness)])
    assert failed == ([0] if case.returns else [])  # the visible status: back to the queue, then the DLQ
    lines = logged(logs, case.logged_as)
    assert lines, logs.getvalue()[-2000:]
    if case.logged_as == "malformed records":  # the message is read, and each record that is not is named
        assert lines[-1]["errors"][0].startswith("record 0 ")
    elif case.code:
        assert lines[-1]["error"].startswith(f"{case.code}: ")
    sibling.assert_attached(harness)
    if not case.returns:
        assert harness.tags(sibling.key, sibling.version)["relay-status"] == "attached"  # not touched twice


def test_a_200_KB_notification_is_read_like_any_other(harness: Harness):
    """SQS carries up to 256 KB: a notification padded to 200 KB is still an upload, and so is its sibling."""
    issue = harness.new_parent()
    key = f"issues/{issue}/padded.jpg"
    version = harness.put(key, PHOTO)
    body = json.loads(notification(harness.bucket, key, harness.etag(key), version))
    body["Records"][0]["padding"] = "p" * 200_000
    sibling = Sibling.make(harness)
    raw = json.dumps(body)
    assert 200_000 < len(raw) < 256 * 1024
    assert run_batch(harness, [raw, sibling.message(harness)]) == []
    assert harness.tags(key, version)["relay-status"] == "attached"
    sibling.assert_attached(harness)


def test_a_record_without_s3_beside_a_good_record_in_one_message(harness: Harness, logs: Any):
    """The good record is relayed (and remembered); the message returns for the bad one, and ends in the DLQ."""
    sibling = Sibling.make(harness)
    body = json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}, _record_of(harness, sibling)]})
    assert run_batch(harness, [body]) == [0]
    sibling.assert_attached(harness)
    assert logged(logs, "malformed records")[-1]["errors"] == ["record 0 lacks s3.bucket.name or s3.object.key"]
    assert run_batch(harness, [body], receive_count=2) == [0]  # the redelivery makes no second attachment
    sibling.assert_attached(harness)


# -- Keys ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyCase:
    key: str  # "{issue}" is a fresh issue's id (every key is new, so its record is the only one)
    code: str | None
    status: str
    raw_key: str | None = None  # the key exactly as the notification carries it, when S3 would not encode it so
    put: bool = True  # the object exists in S3 (a key S3 never stores is only in the notification)


EMOJI_NAME = "\U0001f600" * 250  # 250 characters, 1,000 bytes in UTF-8

KEYS = {
    "key-empty-parent-segment": KeyCase("issues//{issue}.jpg", "EmptyKeySegment", "rejected"),
    "key-blank-parent-segment": KeyCase("issues/ /{issue}.jpg", "EmptyKeySegment", "rejected"),
    "key-trailing-slash": KeyCase("issues/{issue}/", "EmptyKeySegment", "rejected"),
    "key-dot-dot-parent": KeyCase("issues/../{issue}.jpg", "DotKeySegment", "rejected"),
    "key-dot-file-name": KeyCase(
        "issues/{issue}/.", "DotKeySegment", "rejected", raw_key="issues/{issue}/.", put=False
    ),
    "key-percent-00": KeyCase("issues/{issue}/a\x00.jpg", "ControlCharacter", "rejected", put=False),
    "key-control-character": KeyCase("issues/{issue}/bell\x07.jpg", "ControlCharacter", "rejected"),
    "key-newline": KeyCase("issues/{issue}/two\nlines.jpg", "ControlCharacter", "rejected", put=False),
    "key-rtl-override": KeyCase("issues/{issue}/invoice\u202egpj.exe", "ControlCharacter", "rejected"),
    "key-1024-bytes": KeyCase(
        "issues/{issue}/" + "n" * (1024 - len("issues/ISSUE-12345678/")), "KeySegmentTooLong", "rejected"
    ),
    "key-1022-bytes-of-emoji": KeyCase("issues/{issue}/" + EMOJI_NAME, None, "attached"),
    "key-parent-id-too-long": KeyCase("issues/" + "I" * 129 + "/{issue}.jpg", "KeySegmentTooLong", "rejected"),
    "key-nested": KeyCase("issues/{issue}/site/north/x.jpg", "NestedKey", "rejected"),
    "key-unknown-prefix": KeyCase("photos/{issue}/x.jpg", "UnknownPrefix", "rejected"),
    "key-invalid-percent-encoding": KeyCase(
        "issues/{issue}/bad%zz.jpg", "MalformedMessage", "returned", raw_key="issues/{issue}/bad%zz.jpg"
    ),
    "key-percent-encoding-not-utf8": KeyCase(
        "issues/{issue}/caf\xe9.jpg", "MalformedMessage", "returned", raw_key="issues/{issue}/caf%E9.jpg"
    ),
    "key-unicode-is-fine": KeyCase("issues/{issue}/Beton – Riss ü 東京.jpg", None, "attached"),
}


@pytest.mark.parametrize("case", KEYS.values(), ids=KEYS.keys())
def test_a_bad_key_is_named_and_the_batch_goes_on(harness: Harness, logs: Any, case: KeyCase):
    issue = harness.new_parent()
    assert len(f"issues/{issue}/") == len("issues/ISSUE-12345678/")
    key = case.key.format(issue=issue)
    version = harness.put(key, PHOTO) if case.put else "v-never-stored"
    etag = harness.etag(key) if case.put else "0" * 32
    raw = case.raw_key.format(issue=issue) if case.raw_key else None
    sibling = Sibling.make(harness)
    creates = harness.counts().get("itwin.issues.create", 0)
    failed = run_batch(harness, [notification(harness.bucket, key, etag, version, raw), sibling.message(harness)])
    sibling.assert_attached(harness)
    if case.status == "returned":  # no upload can be named: the message goes to the DLQ, the object is untouched
        assert failed == [0]
        assert logged(logs, "malformed records")[-1]["errors"][0].startswith("record 0 has a key")
        assert harness.tags(key, version) == NO_TAG
        assert [r for r in harness.records() if r["key"] == key] == []
        assert harness.counts().get("itwin.issues.create", 0) == creates
        return
    assert failed == []
    record = harness.record_for(key)
    assert (record["status"], record.get("error_code")) == (case.status, case.code)
    if case.status == "attached":
        (att,) = harness.attachments(issue)
        assert att["fileName"] == key.rsplit("/", 1)[1]
        assert harness.tags(key, version) == {"relay-status": "attached", "relay-attachment-id": att["id"]}
        return
    assert harness.counts().get("itwin.issues.create", 0) == creates  # refused before any vendor call
    if case.put:
        assert harness.tags(key, version) == {"relay-status": case.status, "relay-error": case.code}


def test_nfc_and_nfd_forms_of_one_name_are_two_uploads_named_alike(harness: Harness):
    """Two keys that differ only in normalisation are two uploads; each becomes its own attachment, named in NFC."""
    issue = harness.new_parent()
    name = "Café – façade.jpg"
    nfc, nfd = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assert nfc != nfd
    keys = [f"issues/{issue}/{nfc}", f"issues/{issue}/{nfd}"]
    data = [b"composed " + PHOTO, b"decomposed " + PHOTO]
    versions = [harness.put(k, d) for k, d in zip(keys, data, strict=True)]
    sibling = Sibling.make(harness)
    bodies = [notification(harness.bucket, k, harness.etag(k), v) for k, v in zip(keys, versions, strict=True)]
    assert run_batch(harness, [*bodies, sibling.message(harness)]) == []
    atts = harness.attachments(issue)
    assert sorted(a["sha256"] for a in atts) == sorted(sha256(d) for d in data)
    assert {a["fileName"] for a in atts} == {nfc}
    for key, version in zip(keys, versions, strict=True):
        assert harness.tags(key, version)["relay-status"] == "attached"
        assert harness.record_for(key)["status"] == "attached"
    sibling.assert_attached(harness)


# -- Metadata and sizes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectCase:
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    status: str = "attached"
    caption: str | None = None  # the caption iTwin receives
    warning: str | None = None  # the error named in the metadata warning the function logs
    env: dict[str, str] | None = None


LIMIT = 4096
SMALL_LIMIT = {c.MAX_UPLOAD_BYTES_ENV: str(LIMIT)}
BAD_2047 = "=?utf-8?x?not-an-encoding?="
LATIN1_AS_UTF8 = "=?utf-8?q?caf=E9?="

OBJECTS = {
    # S3 refuses user metadata over 2 KB; moto does not, so this is the relay's own handling: passed on whole.
    "meta-10-KB-caption": ObjectCase(2000, {"caption": "c" * 10_240}, caption="c" * 10_240),
    "meta-invalid-rfc-2047": ObjectCase(2000, {"caption": BAD_2047}, caption=BAD_2047),
    "meta-not-utf8": ObjectCase(
        2000, {"caption": LATIN1_AS_UTF8}, caption=LATIN1_AS_UTF8, warning="UnicodeDecodeError"
    ),
    "meta-unknown-charset": ObjectCase(
        2000, {"caption": "=?x-klingon?q?abc?="}, caption="=?x-klingon?q?abc?=", warning="LookupError"
    ),
    "meta-latin1-rfc-2047-decodes": ObjectCase(2000, {"caption": "=?iso-8859-1?q?caf=E9?="}, caption="café"),
    "size-0": ObjectCase(0, code="EmptyFile", status="rejected", env=SMALL_LIMIT),
    "size-exactly-the-limit": ObjectCase(LIMIT, env=SMALL_LIMIT),
    "size-the-limit-plus-1": ObjectCase(LIMIT + 1, code="RequestTooLarge", status="rejected", env=SMALL_LIMIT),
}


@pytest.mark.parametrize("case", OBJECTS.values(), ids=OBJECTS.keys())
def test_metadata_and_sizes(harness: Harness, logs: Any, case: ObjectCase):
    issue = harness.new_parent()
    key = f"issues/{issue}/object.bin"
    data = (PHOTO * (case.size // len(PHOTO) + 1))[: case.size]
    version = harness.put(key, data, **case.metadata)
    sibling = Sibling.make(harness)
    creates = harness.counts().get("itwin.issues.create", 0)
    bodies = [notification(harness.bucket, key, harness.etag(key), version), sibling.message(harness)]
    assert run_batch(harness, bodies, env=case.env) == []
    record = harness.record_for(key)
    assert (record["status"], record.get("error_code")) == (case.status, case.code)
    if case.status == "rejected":
        assert harness.tags(key, version) == {"relay-status": "rejected", "relay-error": case.code}
        assert harness.counts().get("itwin.issues.create", 0) == creates  # refused before any metadata
        assert harness.attachments(issue) == []
    else:
        (att,) = harness.attachments(issue)
        assert (att["sha256"], att["caption"]) == (sha256(data), case.caption)
        assert harness.tags(key, version) == {"relay-status": "attached", "relay-attachment-id": att["id"]}
    if case.warning:
        warnings = logged(logs, "metadata value is not valid RFC 2047; kept as sent")
        assert case.warning in [line.get("error") for line in warnings]
    sibling.assert_attached(harness)


# -- Secrets ---------------------------------------------------------------------------------------------------------


def _good_secret(h: Harness) -> dict[str, Any]:
    stored = h.stack.client("secretsmanager").get_secret_value(SecretId=h.stack.resources["ItwinSecret"])
    value: dict[str, Any] = json.loads(stored["SecretString"])
    return value


SECRETS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "secret-missing": lambda good: None,
    "secret-not-json": lambda good: "client_id=relay; client_secret=x",
    "secret-json-array": lambda good: json.dumps([good]),
    "secret-without-client-id": lambda good: json.dumps({k: v for k, v in good.items() if k != "client_id"}),
    "secret-expires-at-as-bool": lambda good: json.dumps({**good, "access_token": "cached", "expires_at": True}),
    "secret-file-token-url": lambda good: json.dumps({**good, "token_url": "file:///etc/passwd"}),
    "secret-client-secret-with-newline": lambda good: json.dumps({**good, "client_secret": "s3cr3t\nX-Injected: 1"}),
}


@pytest.mark.parametrize("make", SECRETS.values(), ids=SECRETS.keys())
def test_a_bad_secret_fails_visibly_and_loses_nothing(harness: Harness, make: Callable[[dict[str, Any]], str | None]):
    """Never the file's fault: retried, `failed` with ConfigurationError on the last delivery, and once an operator
    fixes the secret the same messages attach both uploads."""
    good = _good_secret(harness)
    secret_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    value = make(good)
    if value is not None:
        harness.stack.client("secretsmanager").create_secret(Name=secret_id, SecretString=value)
    env = {c.ITWIN_SECRET_ID_ENV: secret_id}
    issue = harness.new_parent()
    key = f"issues/{issue}/secret.jpg"
    version = harness.put(key, PHOTO)
    sibling = Sibling.make(harness)
    bodies = [notification(harness.bucket, key, harness.etag(key), version), sibling.message(harness)]
    tokens = harness.counts().get("itwin.token", 0)
    container = harness.flow(env, sleep=lambda s: None)
    assert run_batch(harness, bodies, flow=container) == [0, 1]
    for k in (key, sibling.key):
        record = harness.record_for(k)
        assert (record["status"], record["error_code"]) == ("retrying", "ConfigurationError")
        assert secret_id in record["error_message"]
    assert run_batch(harness, bodies, flow=container, receive_count=5) == [0, 1]
    assert harness.tags(key, version) == {"relay-status": "failed", "relay-error": "ConfigurationError"}
    assert harness.counts().get("itwin.token", 0) == tokens  # nothing was sent anywhere with it
    assert harness.attachments(issue) == []
    for secret_value in ("s3cr3t", "/etc/passwd", good["client_secret"]):
        assert secret_value not in json.dumps(harness.records())
    # The DLQ redrive, once the function reads a good secret again: both attach.
    assert run_batch(harness, bodies, env={}, sleep=lambda s: None) == []
    assert harness.tags(key, version)["relay-status"] == "attached"
    sibling.assert_attached(harness)


# -- Vendor answers --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VendorCase:
    endpoint: str
    answers: list[dict[str, Any]]
    status: str  # the bad upload's record after this delivery
    code: str | None
    config: dict[str, Any] | None = None
    waits: Callable[[list[float]], bool] = lambda waits: True  # what the recorded retry waits must satisfy
    creates: int = 1  # POSTs the delivery makes for the bad upload
    timeout_s: float = 60.0
    gave_up: str | None = None  # why the requestor stopped retrying, as the record's message says
    data: bytes = PHOTO


def _http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


HTML_502 = {"status": 502, "headers": {"Content-Type": "text/html"}, "body": "<html><h1>502 Bad Gateway</h1></html>"}

VENDOR = {
    "create-201-without-location": VendorCase(
        "itwin.issues.create", [{"status": 201, "headers": {}, "body": ""}], "failed", "MissingLocation"
    ),
    "create-location-with-another-scheme": VendorCase(
        "itwin.issues.create", [], "failed", "UnsafeLocation", config={"location_base": "ftp://{host}"}
    ),
    "create-location-on-another-host": VendorCase(
        "itwin.issues.create",
        [],
        "failed",
        "UnsafeLocation",
        config={"location_base": "http://files.elsewhere.example"},
    ),
    "create-200-where-201-is-documented": VendorCase(
        "itwin.issues.create",
        [{"status": 200, "headers": {"Location": "{sandbox}/issues/x/attachments/y"}, "body": ""}],
        "failed",
        "UnexpectedStatus",
    ),
    "create-non-json-error-body": VendorCase(
        "itwin.issues.create",
        [{"status": 400, "headers": {"Content-Type": "text/plain"}, "body": "Bad Request"}],
        "rejected",
        "InvalidRequest",
    ),
    "upload-html-502": VendorCase(
        "itwin.issues.upload", [{**HTML_502, "count": 20}], "retrying", "ServerError", waits=lambda w: len(w) >= 1
    ),
    "upload-429-retry-after-http-date": VendorCase(
        "itwin.issues.upload",
        [{"status": 429, "headers": {"Retry-After": "{date+20}"}, "body": ""}],
        "attached",
        None,
        waits=lambda w: len(w) == 1 and 0 < w[0] <= 21,  # read as a date: seconds until it, never a day
    ),
    "upload-429-retry-after-http-date-in-the-past": VendorCase(
        "itwin.issues.upload",
        [{"status": 429, "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, "body": ""}],
        "attached",
        None,
        waits=lambda w: len(w) == 1 and w[0] < 1,
    ),
    "upload-429-retry-after-nan": VendorCase(
        "itwin.issues.upload",
        [{"status": 429, "headers": {"Retry-After": "nan"}, "body": ""}],
        "attached",
        None,
        waits=lambda w: len(w) == 1 and w[0] < 1,
    ),
    "upload-429-retry-after-86400": VendorCase(
        "itwin.issues.upload",
        [{"status": 429, "retry_after": 86400}],
        "retrying",
        "RateLimitExceeded",
        waits=lambda w: w == [],
        gave_up="retry-after 86400s is over the 60s cap",
    ),
    "upload-429-retry-after-past-the-deadline": VendorCase(
        "itwin.issues.upload",
        [{"status": 429, "retry_after": 30}],
        "retrying",
        "RateLimitExceeded",
        waits=lambda w: w == [],
        timeout_s=20.0,
        gave_up="would outlive the invocation",
    ),
    "create-answer-truncated": VendorCase("itwin.issues.create", [{"short_by": 64}], "attached", None),
    "upload-answer-truncated": VendorCase(
        "itwin.issues.upload", [{"short_by": 64}], "attached", None, waits=lambda w: len(w) == 1
    ),
    "upload-reset-mid-body": VendorCase(
        "itwin.issues.upload",
        [{"drop_after_bytes": 64 * 1024}],  # of 4 MiB: the relay is still sending when the connection resets
        "attached",
        None,
        waits=lambda w: len(w) == 1,
        data=b"4 MiB of photo " * (4 * 1024 * 1024 // 15),
    ),
    "token-answer-truncated": VendorCase("itwin.token", [{"short_by": 64}], "attached", None),
}


@pytest.mark.parametrize("case", VENDOR.values(), ids=VENDOR.keys())
def test_a_bad_vendor_answer_ends_visibly_and_the_batch_goes_on(harness: Harness, case: VendorCase):
    issue = harness.new_parent()
    key = f"issues/{issue}/vendor.jpg"
    version = harness.put(key, case.data)
    sibling = Sibling.make(harness)
    host = harness.sandbox.split("://", 1)[1]
    answers = [
        {**a, "headers": {k: _fill(v, harness) for k, v in a["headers"].items()}} if "headers" in a else a
        for a in case.answers
    ]
    config = dict(case.config or {})
    if config:
        harness.admin("PUT", "config", {k: v.format(host=host) for k, v in config.items()})
    if answers:
        harness.fault(case.endpoint, fail_next=answers)
    before = harness.counts()
    waits: list[float] = []
    bodies = [notification(harness.bucket, key, harness.etag(key), version), sibling.message(harness)]
    flow = harness.flow(sleep=waits.append, timeout_s=case.timeout_s)  # a new container: it mints its own token
    failed = []
    for i, body in enumerate(bodies):
        try:
            flow.handle_message(f"m-{i}", body)
        except RelayError:
            failed.append(i)
        # The sandbox's Location base is one setting for every kind: it answers the bad upload's create only.
        harness.admin("PUT", "config", {"location_base": None})
    after = harness.counts()
    sibling.assert_attached(harness)
    record = harness.record_for(key)
    assert (record["status"], record.get("error_code")) == (case.status, case.code), record
    assert case.waits(waits), waits
    if case.gave_up:
        assert case.gave_up in record["error_message"], record["error_message"]
    assert after.get("itwin.issues.create", 0) - before.get("itwin.issues.create", 0) == case.creates
    if case.status == "attached":
        assert failed == []
        (att,) = harness.attachments(issue)
        assert att["sha256"] == sha256(case.data)
        assert harness.tags(key, version) == {"relay-status": "attached", "relay-attachment-id": att["id"]}
        return
    if case.status == "retrying":
        assert failed == [0]
        assert harness.tags(key, version) == NO_TAG  # not final yet: the queue brings it back
        harness.admin("DELETE", "faults")
        (outcome,) = harness.flow(sleep=waits.append).handle_message("m-0", bodies[0], 2)
        assert outcome.status == "attached"
        (att,) = harness.attachments(issue)
        assert att["sha256"] == sha256(case.data)
        return
    assert failed == []
    assert harness.tags(key, version) == {"relay-status": case.status, "relay-error": case.code}
    assert harness.attachments(issue) == []  # whatever the create made was found and deleted


def _fill(value: str, h: Harness) -> str:
    if value == "{date+20}":
        return _http_date(20)
    return value.replace("{sandbox}", h.sandbox)


def test_a_relative_location_resolves_against_the_api(harness: Harness):
    """iTwin may answer the create with a path: it names the attachment on the API's own origin."""
    issue = harness.new_parent()
    made = ITwinClient(harness.itwin_requestor()).create_attachment("issues", issue, "relative.jpg")
    key = f"issues/{issue}/relative.jpg"
    version = harness.put(key, PHOTO)
    sibling = Sibling.make(harness)
    relative = f"/issues/{issue}/attachments/{made.attachment_id}"
    harness.fault("itwin.issues.create", fail_next=[{"status": 201, "headers": {"Location": relative}, "body": ""}])
    bodies = [notification(harness.bucket, key, harness.etag(key), version), sibling.message(harness)]
    assert run_batch(harness, bodies) == []
    (att,) = harness.attachments(issue)
    assert (att["id"], att["sha256"]) == (made.attachment_id, sha256(PHOTO))
    assert harness.tags(key, version) == {"relay-status": "attached", "relay-attachment-id": att["id"]}
    sibling.assert_attached(harness)


# -- API and webhook requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpCase:
    send: Callable[[Hooks, str], Any]  # the bad request, given the hooks and a fresh issue id; returns the response
    status: int
    code: str
    field: str | None = None


def _webhook(hooks: Hooks, issue: str, *, content_type: str = "application/json", **changes: Any) -> Any:
    import requests

    event = json.loads(hooks.body("issues.attachmentAttached.v1", "issues", issue, "att-bad"))
    event.update(changes)
    raw = json.dumps(event).encode()
    headers = {"Content-Type": content_type, "Signature": sign(WEBHOOK_SECRET, raw)}
    return requests.post(hooks.url, data=raw, headers=headers, timeout=30)


HTTP = {
    "webhook-body-over-the-limit": HttpCase(
        lambda hooks, issue: _webhook(hooks, issue, pad="x" * (256 * 1024)), 413, "PayloadTooLarge"
    ),
    "webhook-wrong-content-type": HttpCase(
        lambda hooks, issue: _webhook(hooks, issue, content_type="text/plain"), 415, "UnsupportedMediaType"
    ),
    "webhook-form-content-type": HttpCase(
        lambda hooks, issue: _webhook(hooks, issue, content_type="application/x-www-form-urlencoded"),
        415,
        "UnsupportedMediaType",
    ),
    "webhook-bad-message-id": HttpCase(
        lambda hooks, issue: _webhook(hooks, issue, messageId="../x"), 400, "BadRequest"
    ),
    "webhook-bad-attachment-id": HttpCase(
        lambda hooks, issue: _webhook(hooks, issue, content={"attachmentId": "..", "issueId": issue}), 400, "BadRequest"
    ),
    "api-id-with-percent-00": HttpCase(
        lambda hooks, issue: hooks.api.get("/issues/%00x/attachments"), 422, "ValidationError", "issueId"
    ),
    "api-id-with-rtl-override": HttpCase(
        lambda hooks, issue: hooks.api.get("/issues/%E2%80%AEevil/attachments"), 422, "ValidationError", "issueId"
    ),
    "api-id-invalid-percent-encoding": HttpCase(
        lambda hooks, issue: hooks.api.get("/forms/%ff/attachments"), 422, "ValidationError", "formId"
    ),
    "api-id-too-long": HttpCase(
        lambda hooks, issue: hooks.api.get("/forms/" + "F" * 129 + "/attachments"), 422, "ValidationError", "formId"
    ),
    "api-attachment-id-dot-dot": HttpCase(
        lambda hooks, issue: hooks.api.get(f"/issues/{issue}/attachments/..%2F..%2Fx/file"),
        422,
        "ValidationError",
        "attachmentId",
    ),
    "api-body-over-10-MB": HttpCase(
        lambda hooks, issue: hooks.api.get(f"/issues/{issue}/attachments", data=b"x" * (10 * 1024 * 1024 + 1)),
        413,
        "Request Too Long",  # API Gateway's own answer, before the function: {"message": ...}
    ),
}


@pytest.mark.parametrize("case", HTTP.values(), ids=HTTP.keys())
def test_a_bad_request_gets_a_named_answer_and_the_next_one_is_served(api: Api, harness: Harness, case: HttpCase):
    hooks = Hooks(api)
    issue = harness.new_parent()
    attachment = api.attach("issues", issue, "kept.jpg", PHOTO)
    answer = case.send(hooks, issue)
    body = answer.json()
    assert (answer.status_code, body.get("code", body.get("message"))) == (case.status, case.code), answer.text
    if case.field:
        assert body["field"] == case.field
    assert harness.queue_depth("ArchiveQueue") == 0  # nothing was queued for it
    # The good requests after it: a listing, and a delivery that queues its archive.
    listing = api.get(f"/issues/{issue}/attachments")
    assert listing.status_code == 200, listing.text
    assert [a["id"] for a in listing.json()["attachments"]] == [attachment]
    good = hooks.post(hooks.body("issues.attachmentAttached.v1", "issues", issue, attachment))
    assert (good.status_code, good.json()["status"]) == (202, "queued")
    assert harness.queue_depth("ArchiveQueue") == 1
