"""The S3 → iTwin flow's decisions, with a fake iTwin client and moto in-process laid out from template.yaml."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from relay import errors as e
from relay.aws.s3objects import ObjectStore
from relay.aws.transfers import TransferRecords
from relay.flows.s3_to_itwin import S3ToItwinFlow, TransferOutcome
from relay.flows.s3_to_itwin.flow import RetryLaterError
from relay.flows.s3_to_itwin.targets import parse_target
from relay.settings import Settings
from relay.transport.requestor import Requestor
from relay.transport.retry import Deadline
from relay.vendors.itwin import CreatedAttachment, ITwinClient, Kind

BASE = "https://api.bentley.com"
LOST = "lost"  # a create that lands on the vendor's side, and whose answer is then lost


class FakeItwin(ITwinClient):
    """iTwin as the flow sees it: attachments in memory, and faults scripted per operation."""

    def __init__(self) -> None:
        super().__init__(Requestor(BASE, tokens=None))  # the real client's URLs; no request is ever sent
        self.attachments: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, list[Any]] = {"create": [], "upload": [], "list": [], "delete": []}
        self.calls: Counter[str] = Counter()
        self.deadline: Deadline | None = None
        self.created_at = "2026-12-02T10:00:00.0000000Z"
        self.put_to: list[str] = []

    def _fault(self, op: str) -> Any:
        return self.faults[op].pop(0) if self.faults[op] else None

    def use_deadline(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def add(self, kind: Kind, parent_id: str, file_name: str, **fields: Any) -> str:
        attachment_id = f"att-{len(self.attachments) + 1}"
        self.attachments[attachment_id] = {
            "id": attachment_id,
            "kind": kind,
            "parent": parent_id,
            "fileName": file_name,
            "createdDateTime": self.created_at,
            "data": None,
            **fields,
        }
        return attachment_id

    def create_attachment(
        self, kind: Kind, parent_id: str, file_name: str, caption: str | None = None, binding: str | None = None
    ) -> CreatedAttachment:
        self.calls["create"] += 1
        fault = self._fault("create")
        if isinstance(fault, BaseException):
            raise fault
        attachment_id = self.add(kind, parent_id, file_name, caption=caption, binding=binding)
        if fault == LOST:
            raise e.VendorConnectionError("answer lost", code="Timeout")
        if isinstance(fault, tuple):  # ("landed", error): the metadata exists, the answer is unusable
            raise fault[1]
        if fault == "elsewhere":  # a Location on another allowed host, which does not name the id
            return CreatedAttachment(None, f"https://files.bentley.com/blob/{attachment_id}")
        return CreatedAttachment(attachment_id, self.attachment_url(kind, parent_id, attachment_id))

    def upload(self, location: str, body: Any, size: int, content_type: str = "application/octet-stream") -> None:
        self.calls["upload"] += 1
        fault = self._fault("upload")
        if isinstance(fault, BaseException):
            raise fault
        attachment_id = unquote(location.rsplit("/", 1)[-1])
        self.put_to.append(location)
        stream = body()
        self.attachments[attachment_id]["data"] = stream.read()
        stream.close()

    def list_attachments(self, kind: Kind, parent_id: str) -> Iterator[dict[str, Any]]:
        self.calls["list"] += 1
        fault = self._fault("list")
        if isinstance(fault, BaseException):
            raise fault
        for a in list(self.attachments.values()):
            if (a["kind"], a["parent"]) == (kind, parent_id):
                yield {**{k: v for k, v in a.items() if k != "data"}, "size": len(a["data"]) if a["data"] else None}

    def delete_attachment(self, kind: Kind, parent_id: str, attachment_id: str) -> None:
        self.calls["delete"] += 1
        fault = self._fault("delete")
        if isinstance(fault, BaseException):
            raise fault
        if self.attachments.pop(attachment_id, None) is None:
            raise e.NotFoundError("gone", http_status=404, code="AttachmentNotFound")

    def of(self, parent_id: str) -> list[dict[str, Any]]:
        return [a for a in self.attachments.values() if a["parent"] == parent_id]


@pytest.fixture
def itwin() -> FakeItwin:
    return FakeItwin()


REMEMBERING = object()


def make_flow(
    aws: Any,
    itwin: FakeItwin,
    *,
    objects: ObjectStore | None = None,
    records: TransferRecords | None = None,
    persistence: Any = REMEMBERING,
    **settings: Any,
) -> S3ToItwinFlow:
    """The flow through its constructor, every collaborator a real one (moto) unless a test passes its own."""
    return S3ToItwinFlow(
        settings=Settings.load({}, max_receive_count=3, **settings),
        objects=objects or ObjectStore(aws.s3),
        itwin=itwin,
        records=records or TransferRecords(aws.tables["TransfersTable"], aws.dynamodb),
        persistence=DynamoDBPersistenceLayer(table_name=aws.tables["IdempotencyTable"], boto3_client=aws.dynamodb)
        if persistence is REMEMBERING
        else persistence,
    )


@pytest.fixture
def flow(aws, itwin, lambda_context) -> S3ToItwinFlow:
    flow = make_flow(aws, itwin)
    flow.start_invocation(lambda_context)  # idempotency locks expire with the invocation, as on Lambda
    return flow


def message(bucket: str, key: str, fields: dict[str, Any], event: str = "ObjectCreated:Put") -> str:
    obj = {"key": quote(key, safe="/").replace("%20", "+"), **fields}
    return json.dumps({"Records": [{"eventName": event, "s3": {"bucket": {"name": bucket}, "object": obj}}]})


def relay(flow: S3ToItwinFlow, aws: Any, key: str, fields: dict[str, Any], receive: int = 1) -> TransferOutcome:
    (outcome,) = flow.handle_message("m-1", message(aws.bucket, key, fields), receive)
    return outcome


def identity(aws: Any, key: str, fields: dict[str, Any]) -> str:
    return f"{aws.bucket}/{key}#{fields.get('versionId') or 'etag:' + fields['eTag']}"


PHOTO = b"\xff\xd8 a site photo " * 64


# -- the happy path, and resuming -------------------------------------------------------------------


def test_upload_becomes_one_attachment_with_caption_tags_and_record(aws, itwin, flow):
    fields = aws.put("issues/ISSUE-1/Riss – Müller.jpg", PHOTO, caption="=?UTF-8?B?Q2Fmw6k=?=", binding="b1")
    outcome = relay(flow, aws, "issues/ISSUE-1/Riss – Müller.jpg", fields)
    (att,) = itwin.of("ISSUE-1")
    assert (outcome.status, outcome.attachment_id, outcome.bytes) == ("attached", att["id"], len(PHOTO))
    assert att["data"] == PHOTO
    assert (att["caption"], att["binding"]) == ("Café", "b1")
    assert aws.tags("issues/ISSUE-1/Riss – Müller.jpg") == {
        "relay-status": "attached",
        "relay-attachment-id": att["id"],
    }
    record = aws.record(identity(aws, "issues/ISSUE-1/Riss – Müller.jpg", fields))
    assert (record["status"], record["step"], record["target"]) == ("attached", "done", "issues/ISSUE-1")


def test_a_duplicate_returns_the_remembered_outcome_without_vendor_calls(aws, itwin, flow):
    fields = aws.put("issues/I/a.jpg", PHOTO)
    first = relay(flow, aws, "issues/I/a.jpg", fields)
    calls = dict(itwin.calls)
    assert relay(flow, aws, "issues/I/a.jpg", fields) == first
    assert dict(itwin.calls) == calls


def test_a_failed_put_resumes_to_the_recorded_location_without_a_second_post(aws, itwin, flow):
    fields = aws.put("issues/I/b.jpg", PHOTO)
    itwin.faults["upload"] = [e.ServerError("down", http_status=503)]
    with pytest.raises(RetryLaterError):
        relay(flow, aws, "issues/I/b.jpg", fields)
    assert aws.record(identity(aws, "issues/I/b.jpg", fields))["status"] == "retrying"
    assert relay(flow, aws, "issues/I/b.jpg", fields, receive=2).status == "attached"
    assert itwin.calls["create"] == 1
    (att,) = itwin.of("I")
    assert att["data"] == PHOTO


def test_start_invocation_gives_the_client_the_deadline(aws, itwin, flow):
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 42_000

    flow.start_invocation(Context())
    assert itwin.deadline is not None
    assert itwin.deadline.remaining() == 42.0


# -- one error language: error → status, tag and record ---------------------------------------------

FAILED_NOW = [
    ("create", e.NotFoundError("no", http_status=404, code="IssueNotFound"), "failed", "IssueNotFound"),
    ("create", e.PermissionDeniedError("no", http_status=403, code="InsufficientPermissions"), "failed", None),
    ("create", e.InvalidRequestError("bad", http_status=422, code="InvalidAttachmentRequest"), "rejected", None),
    ("create", e.AuthenticationError("401 twice", http_status=401, code="InvalidToken"), "failed", None),
    ("create", e.MissingLocationError("no Location", http_status=201), "failed", None),
    ("create", e.UnsafeLocationError("foreign host"), "failed", None),
    ("upload", e.TooLargeError("big", http_status=413, code="RequestTooLarge"), "rejected", None),
    ("upload", e.UnsafeLocationError("foreign host"), "failed", None),
    ("upload", e.UnexpectedStatusError("a 307", http_status=307), "failed", None),
]


@pytest.mark.parametrize(("op", "error", "status", "code"), FAILED_NOW)
def test_final_errors_are_tagged_recorded_remembered_and_leave_no_metadata(aws, itwin, flow, op, error, status, code):
    fields = aws.put("issues/I/c.jpg", PHOTO)
    landed = op == "create" and isinstance(error, e.MissingLocationError | e.UnsafeLocationError)
    itwin.faults[op] = [("landed", error) if landed else error]
    outcome = relay(flow, aws, "issues/I/c.jpg", fields)
    assert outcome.status == status
    assert outcome.error_code == (code or error.code)
    assert aws.tags("issues/I/c.jpg") == {"relay-status": status, "relay-error": outcome.error_code}
    record = aws.record(identity(aws, "issues/I/c.jpg", fields))
    assert (record["status"], record["error_code"]) == (status, outcome.error_code)
    assert itwin.of("I") == []  # whatever metadata was created is gone
    calls = dict(itwin.calls)
    assert relay(flow, aws, "issues/I/c.jpg", fields) == outcome  # remembered: final
    assert dict(itwin.calls) == calls


RETRIED = [
    e.RateLimitedError("slow down", http_status=429, retry_after=30),
    e.ServerError("down", http_status=503, code="ServiceUnavailable"),
    e.VendorConnectionError("refused", code="ConnectionRefused"),
    e.TokenEndpointError("token endpoint unreachable"),
    e.TokenEndpointError("invalid_client", code="invalid_client"),
    e.ConfigurationError("secret 'x': field 'client_id' is missing"),
    e.MalformedResponseError("an HTML page", http_status=200),
    RuntimeError("a bug nobody expected"),
]


@pytest.mark.parametrize("error", RETRIED, ids=lambda x: type(x).__name__)
def test_retryable_errors_come_back_then_end_visibly_failed_on_the_last_delivery(aws, itwin, flow, error):
    fields = aws.put("issues/I/d.jpg", PHOTO)
    code = error.code if isinstance(error, e.RelayError) else "InternalError"
    itwin.faults["create"] = [error, error]
    with pytest.raises(RetryLaterError):
        relay(flow, aws, "issues/I/d.jpg", fields, receive=1)
    record = aws.record(identity(aws, "issues/I/d.jpg", fields))
    assert (record["status"], record["error_code"]) == ("retrying", code)
    assert aws.tags("issues/I/d.jpg") == {}
    with pytest.raises(RetryLaterError):  # the last delivery: tagged, recorded, and on to the DLQ
        relay(flow, aws, "issues/I/d.jpg", fields, receive=3)
    assert aws.tags("issues/I/d.jpg") == {"relay-status": "failed", "relay-error": code}
    assert aws.record(identity(aws, "issues/I/d.jpg", fields))["status"] == "failed"
    # Not remembered: a DLQ redrive relays it once the cause is gone.
    assert relay(flow, aws, "issues/I/d.jpg", fields, receive=1).status == "attached"
    assert len(itwin.of("I")) == 1


def test_last_delivery_deletes_the_metadata_it_created(aws, itwin, flow):
    fields = aws.put("issues/I/e.jpg", PHOTO)
    itwin.faults["upload"] = [e.ServerError("down", http_status=503)]
    with pytest.raises(RetryLaterError):
        relay(flow, aws, "issues/I/e.jpg", fields, receive=3)
    assert itwin.of("I") == []
    assert aws.tags("issues/I/e.jpg")["relay-status"] == "failed"


def test_metadata_that_cannot_be_deleted_is_named_in_the_record(aws, itwin, flow):
    fields = aws.put("issues/I/f.jpg", PHOTO)
    itwin.faults["upload"] = [e.TooLargeError("big", http_status=413)]
    itwin.faults["delete"] = [e.ServerError("down", http_status=503)]
    assert relay(flow, aws, "issues/I/f.jpg", fields).status == "rejected"
    (orphan,) = itwin.of("I")
    assert aws.record(identity(aws, "issues/I/f.jpg", fields))["orphan_attachment_id"] == orphan["id"]


# -- checks before any vendor call --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "body", "code"),
    [
        ("issues/I/empty.jpg", b"", "EmptyFile"),
        ("issues/I/nested/x.jpg", PHOTO, "NestedKey"),
        ("photos/I/x.jpg", PHOTO, "UnknownPrefix"),
        ("issues/I/big.bin", b"x" * 2048, "RequestTooLarge"),
    ],
)
def test_refused_before_any_vendor_call(aws, itwin, lambda_context, key, body, code):
    flow = make_flow(aws, itwin, max_upload_bytes=1024)
    flow.start_invocation(lambda_context)
    outcome = relay(flow, aws, key, aws.put(key, body))
    assert (outcome.status, outcome.error_code) == ("rejected", code)
    assert aws.tags(key)["relay-error"] == code
    assert sum(itwin.calls.values()) == 0


def test_a_skip_is_not_remembered_so_the_real_upload_is_relayed(aws, itwin, flow):
    """A sample event invoked before its object exists must not swallow the upload that follows."""
    import hashlib

    key = "issues/I/later.jpg"
    fields = {"eTag": hashlib.md5(PHOTO).hexdigest()}  # noqa: S324 - S3's eTag of a single-part upload
    outcome = relay(flow, aws, key, fields)
    assert (outcome.status, outcome.error_code) == ("skipped", "ObjectDeleted")
    assert aws.record(identity(aws, key, fields))["status"] == "skipped"
    aws.put(key, PHOTO)
    assert relay(flow, aws, key, fields).status == "attached"


def test_an_overwritten_unversioned_object_is_superseded(aws, itwin, flow):
    key = "issues/I/over.jpg"
    aws.put(key, PHOTO)
    outcome = relay(flow, aws, key, {"eTag": "an-older-etag"})
    assert (outcome.status, outcome.error_code) == ("skipped", "Superseded")
    assert itwin.calls["create"] == 0


def test_an_object_deleted_mid_transfer_is_skipped_and_its_metadata_deleted(aws, itwin, flow):
    fields = aws.put("issues/I/g.jpg", PHOTO)
    itwin.faults["upload"] = [e.ObjectGoneError("s3://uploads/issues/I/g.jpg no longer exists")]
    assert relay(flow, aws, "issues/I/g.jpg", fields).status == "skipped"
    assert itwin.of("I") == []


# -- adoption after a lost create: no clock involved -------------------------------------------------


@pytest.mark.parametrize("vendor_clock", ["2001-01-01T00:00:00Z", "2099-12-31T23:59:59.9999999Z", None, "garbage"])
def test_a_lost_create_is_adopted_whatever_the_vendors_clock_says(aws, itwin, flow, vendor_clock):
    itwin.created_at = vendor_clock
    fields = aws.put("issues/I/h.jpg", PHOTO)
    itwin.faults["create"] = [LOST]
    outcome = relay(flow, aws, "issues/I/h.jpg", fields)
    (att,) = itwin.of("I")
    assert (outcome.status, outcome.attachment_id) == ("attached", att["id"])
    assert att["data"] == PHOTO
    assert itwin.calls["create"] == 1


def test_a_lost_create_with_nothing_to_adopt_comes_back_and_is_found_later(aws, itwin, flow):
    fields = aws.put("issues/I/i.jpg", PHOTO)
    itwin.faults["create"] = [LOST]
    itwin.faults["list"] = [e.MalformedResponseError("an HTML 200", http_status=200)]
    with pytest.raises(RetryLaterError):
        relay(flow, aws, "issues/I/i.jpg", fields)
    assert aws.record(identity(aws, "issues/I/i.jpg", fields))["step"] == "creating"
    assert relay(flow, aws, "issues/I/i.jpg", fields, receive=2).status == "attached"
    assert itwin.calls["create"] == 1
    assert len(itwin.of("I")) == 1


def test_adoption_never_takes_an_attachment_another_upload_claims(aws, itwin, flow):
    """v1 created (and claimed) its attachment; v2's create answer is lost: v2 takes its own, not v1's."""
    key = "issues/I/two-versions.jpg"
    v1 = aws.put(key, b"version one")
    itwin.faults["upload"] = [e.ServerError("down", http_status=503)]
    with pytest.raises(RetryLaterError):
        relay(flow, aws, key, v1)  # v1 dies between POST and PUT, its record and claim saying "created"
    v2 = aws.put(key, b"version two")
    itwin.faults["create"] = [LOST]
    assert relay(flow, aws, key, v2).status == "attached"
    assert relay(flow, aws, key, v1, receive=2).status == "attached"
    assert sorted(a["data"] for a in itwin.of("I")) == [b"version one", b"version two"]
    assert (
        aws.tags(key, v1["versionId"])["relay-attachment-id"] != aws.tags(key, v2["versionId"])["relay-attachment-id"]
    )


def test_ambiguous_candidates_are_named_as_suspected_orphans_not_deleted(aws, itwin, flow):
    itwin.add("issues", "I", "j.jpg")  # someone else's file-less attachment of the same name
    fields = aws.put("issues/I/j.jpg", PHOTO)
    itwin.faults["create"] = [LOST]
    assert relay(flow, aws, "issues/I/j.jpg", fields).status == "attached"
    assert len(itwin.of("I")) == 2
    record = aws.record(identity(aws, "issues/I/j.jpg", fields))
    assert len(record["suspected_orphans"]) == 1


def test_adopted_urls_are_built_by_the_client_with_every_segment_quoted(aws, itwin, flow):
    key = "issues/ISSUE#7?x/k.jpg"
    fields = aws.put(key, PHOTO)
    itwin.faults["create"] = [LOST]
    assert relay(flow, aws, key, fields).status == "attached"
    record = aws.record(identity(aws, key, fields))
    assert record["location"].startswith(f"{BASE}/issues/ISSUE%237%3Fx/attachments/")


# -- messages ---------------------------------------------------------------------------------------


def test_test_events_and_non_creation_records_are_named_and_skipped(aws, flow):
    assert flow.handle_message("m", json.dumps({"Event": "s3:TestEvent", "Bucket": "uploads"})) == []
    body = message(aws.bucket, "issues/I/x.jpg", {"eTag": "e"}, event="ObjectRemoved:Delete")
    assert flow.handle_message("m", body) == []


def test_a_bad_record_does_not_stop_the_good_one_in_the_same_message(aws, itwin, flow):
    fields = aws.put("issues/I/good.jpg", PHOTO)
    good = json.loads(message(aws.bucket, "issues/I/good.jpg", fields))["Records"][0]
    body = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}, good]})
    with pytest.raises(e.MalformedMessageError, match="record 0"):
        flow.handle_message("m", body)
    assert aws.tags("issues/I/good.jpg")["relay-status"] == "attached"
    assert len(itwin.of("I")) == 1


def test_a_malformed_message_is_retried_to_the_dlq(flow):
    with pytest.raises(e.MalformedMessageError):
        flow.handle_message("m", "not json")


def test_targets_parse_keys_and_name_claims():
    target = parse_target("forms/F-1/Report.pdf")
    assert target.describe() == "forms/F-1"
    assert target.claim_key("a1") == "itwin:forms/F-1/a1"


def test_a_claim_lost_between_create_and_claim_makes_a_fresh_attachment(aws, itwin, flow):
    key = "issues/I/raced.jpg"
    fields = aws.put(key, PHOTO)
    other = aws.put("issues/I/other.jpg", b"other")
    from relay.aws.s3events import Upload

    # Another upload's adoption claims the attachment our create is about to make (att-1).
    assert flow.records.claim(
        "itwin:issues/I/att-1", Upload(aws.bucket, "issues/I/other.jpg", other["versionId"], None)
    )
    with pytest.raises(RetryLaterError):
        relay(flow, aws, key, fields)
    outcome = relay(flow, aws, key, fields, receive=2)
    assert (outcome.status, outcome.attachment_id) == ("attached", "att-2")
    assert itwin.attachments["att-2"]["data"] == PHOTO


def test_a_record_that_says_done_answers_without_vendor_calls(aws, itwin):
    """The transfers record outlives the idempotency record: it still prevents a second attachment."""
    flow = make_flow(aws, itwin, persistence=None)  # the idempotency record expired: only the transfers record is left
    fields = aws.put("issues/I/old.jpg", PHOTO)
    first = relay(flow, aws, "issues/I/old.jpg", fields)
    calls = dict(itwin.calls)
    assert relay(flow, aws, "issues/I/old.jpg", fields).attachment_id == first.attachment_id
    assert dict(itwin.calls) == calls


class UntaggableObjects(ObjectStore):
    def tag(self, *args: Any, **kwargs: Any) -> None:
        raise e.ObjectStoreError("tagging failed: SlowDown")


def test_a_tag_that_fails_is_retried_not_lost(aws, itwin, lambda_context):
    untaggable = make_flow(aws, itwin, objects=UntaggableObjects(aws.s3))
    untaggable.start_invocation(lambda_context)
    fields = aws.put("issues/I/t.jpg", PHOTO)
    itwin.faults["create"] = [e.NotFoundError("no", http_status=404, code="IssueNotFound")]
    with pytest.raises(RetryLaterError):
        relay(untaggable, aws, "issues/I/t.jpg", fields)
    flow = make_flow(aws, itwin)  # the next delivery, where S3 answers again
    flow.start_invocation(lambda_context)
    itwin.faults["create"] = [e.NotFoundError("no", http_status=404, code="IssueNotFound")]
    assert relay(flow, aws, "issues/I/t.jpg", fields).status == "failed"
    assert aws.tags("issues/I/t.jpg")["relay-status"] == "failed"


def test_an_untaggable_key_outside_the_prefixes_is_still_recorded(aws, itwin, lambda_context):
    flow = make_flow(aws, itwin, objects=UntaggableObjects(aws.s3))
    flow.start_invocation(lambda_context)
    fields = aws.put("misc/x.jpg", PHOTO)
    assert relay(flow, aws, "misc/x.jpg", fields).status == "rejected"
    assert aws.record(identity(aws, "misc/x.jpg", fields))["error_code"] == "UnknownPrefix"


def test_a_transfers_table_that_fails_is_retried(aws, itwin, lambda_context):
    flow = make_flow(aws, itwin, records=TransferRecords("no-such-table", aws.dynamodb))
    flow.start_invocation(lambda_context)
    fields = aws.put("issues/I/u.jpg", PHOTO)
    with pytest.raises(RetryLaterError, match="RecordStoreError"):
        relay(flow, aws, "issues/I/u.jpg", fields)


def test_a_concurrent_duplicate_is_told_to_come_back(aws, lambda_context):
    import threading

    started, release = threading.Event(), threading.Event()

    class SlowItwin(FakeItwin):
        def upload(self, *args: Any, **kwargs: Any) -> None:
            started.set()
            release.wait(10)
            super().upload(*args, **kwargs)

    slow = SlowItwin()
    flow = make_flow(aws, slow)
    flow.start_invocation(lambda_context)
    fields = aws.put("issues/I/dup.jpg", PHOTO)
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(relay(flow, aws, "issues/I/dup.jpg", fields)))
    first.start()
    assert started.wait(10)
    with pytest.raises(RetryLaterError) as info:
        relay(flow, aws, "issues/I/dup.jpg", fields)
    assert type(info.value.__cause__).__name__ == "IdempotencyAlreadyInProgressError"
    release.set()
    first.join(10)
    assert results[0].status == "attached"
    assert len(slow.of("I")) == 1


def test_handle_record_reads_the_sample_event_and_its_receive_count(aws, itwin, flow, lambda_context):
    """The sample event, delivered for the third time (the last): a retryable failure ends visibly failed."""
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from tests.conftest import EVENTS, load_event

    raw = load_event("s3-put-issue-photo.json")["Records"][0]
    body = json.loads(raw["body"])
    s3 = body["Records"][0]["s3"]
    key = unquote(s3["object"]["key"].replace("+", " "))
    fields = aws.put(key, (EVENTS / "objects" / "photo.jpg").read_bytes())
    s3["bucket"]["name"] = aws.bucket
    s3["object"].update(fields)
    raw = {**raw, "body": json.dumps(body), "attributes": {**raw.get("attributes", {}), "ApproximateReceiveCount": "3"}}
    itwin.faults["create"] = [e.ServerError("down", http_status=503)]
    with pytest.raises(RetryLaterError):
        flow.handle_record(SQSRecord(raw), lambda_context)
    assert aws.tags(key) == {"relay-status": "failed", "relay-error": "ServerError"}


# -- a delivered file is never deleted --------------------------------------------------------------


class FlakyTags(ObjectStore):
    """S3 that refuses to tag `times` times (SlowDown), or reports the object gone when tagging."""

    def __init__(self, client: Any, error: Exception, times: int = 1) -> None:
        super().__init__(client)
        self.error, self.times = error, times

    def tag(self, *args: Any, **kwargs: Any) -> None:
        if self.times:
            self.times -= 1
            raise self.error
        super().tag(*args, **kwargs)


@pytest.mark.parametrize(
    "error", [e.ObjectStoreError("tagging failed: SlowDown"), e.ObjectGoneError("s3://uploads/x no longer exists")]
)
def test_a_tag_failure_after_the_put_on_the_last_delivery_keeps_the_attachment(aws, itwin, lambda_context, error):
    flow = make_flow(aws, itwin, objects=FlakyTags(aws.s3, error))
    flow.start_invocation(lambda_context)
    fields = aws.put("issues/I/kept.jpg", PHOTO)
    outcome = relay(flow, aws, "issues/I/kept.jpg", fields, receive=3)
    (att,) = itwin.of("I")
    assert (outcome.status, outcome.attachment_id) == ("attached", att["id"])
    assert att["data"] == PHOTO
    assert itwin.calls["delete"] == 0
    assert aws.record(identity(aws, "issues/I/kept.jpg", fields))["status"] == "attached"


def test_a_tag_failure_after_the_put_is_retried_and_only_tags_next_time(aws, itwin, lambda_context):
    flow = make_flow(aws, itwin, objects=FlakyTags(aws.s3, e.ObjectStoreError("tagging failed: SlowDown")))
    flow.start_invocation(lambda_context)
    fields = aws.put("issues/I/later-tag.jpg", PHOTO)
    with pytest.raises(RetryLaterError):
        relay(flow, aws, "issues/I/later-tag.jpg", fields)
    calls = dict(itwin.calls)
    assert relay(flow, aws, "issues/I/later-tag.jpg", fields, receive=2).status == "attached"
    assert dict(itwin.calls) == calls  # no second POST, no second PUT, no delete: only the tag
    (att,) = itwin.of("I")
    assert aws.tags("issues/I/later-tag.jpg") == {"relay-status": "attached", "relay-attachment-id": att["id"]}


def test_a_location_that_names_no_id_is_resolved_by_listing(aws, itwin, flow):
    fields = aws.put("issues/I/elsewhere.jpg", PHOTO)
    itwin.faults["create"] = ["elsewhere"]
    outcome = relay(flow, aws, "issues/I/elsewhere.jpg", fields)
    (att,) = itwin.of("I")
    assert (outcome.status, outcome.attachment_id) == ("attached", att["id"])
    assert itwin.put_to == [f"https://files.bentley.com/blob/{att['id']}"]  # the PUT still goes to the Location


def test_a_lost_create_never_found_is_named_in_the_record_on_the_last_delivery(aws, itwin, flow):
    fields = aws.put("issues/I/ghost.jpg", PHOTO)
    itwin.faults["create"] = [e.VendorConnectionError("answer lost", code="Timeout")]  # lost, and never landed
    with pytest.raises(RetryLaterError):
        relay(flow, aws, "issues/I/ghost.jpg", fields, receive=3)
    record = aws.record(identity(aws, "issues/I/ghost.jpg", fields))
    assert record["status"] == "failed"
    assert "ghost.jpg" in record["orphan_suspected"]


class FlakyRecords(TransferRecords):
    """A transfers table that throttles the one write that marks a transfer done."""

    def update(self, upload: Any, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        if fields.get("step") == "done" and not getattr(self, "failed_once", False):
            self.failed_once = True
            raise e.RecordStoreError("transfers table: update_item failed: ProvisionedThroughputExceeded")
        super().update(upload, remove=remove, **fields)


def test_a_record_write_failure_after_the_put_on_the_last_delivery_keeps_the_attachment(aws, itwin, lambda_context):
    records = FlakyRecords(aws.tables["TransfersTable"], aws.dynamodb)
    flow = make_flow(aws, itwin, records=records)
    flow.start_invocation(lambda_context)
    fields = aws.put("issues/I/kept-2.jpg", PHOTO)
    outcome = relay(flow, aws, "issues/I/kept-2.jpg", fields, receive=3)
    (att,) = itwin.of("I")
    assert (outcome.status, outcome.attachment_id) == ("attached", att["id"])
    assert itwin.calls["delete"] == 0
    assert aws.tags("issues/I/kept-2.jpg")["relay-status"] == "attached"
    assert aws.record(identity(aws, "issues/I/kept-2.jpg", fields))["step"] == "done"


def test_adoption_never_takes_another_versions_caption(aws, itwin, flow):
    """Two versions with different captions, both of whose create answers were lost: each keeps its own."""
    key = "issues/I/captions.jpg"
    v1 = aws.put(key, b"one", caption="caption one")
    itwin.faults["create"] = [LOST]
    itwin.faults["list"] = [e.MalformedResponseError("an HTML 200", http_status=200)]
    with pytest.raises(RetryLaterError):
        relay(flow, aws, key, v1)  # v1's create landed, unresolved
    v2 = aws.put(key, b"two", caption="caption two")
    itwin.faults["create"] = [LOST]
    assert relay(flow, aws, key, v2).status == "attached"
    assert relay(flow, aws, key, v1, receive=2).status == "attached"
    by_caption = {a["caption"]: a["data"] for a in itwin.of("I")}
    assert by_caption == {"caption one": b"one", "caption two": b"two"}


def test_a_table_that_fails_on_the_last_delivery_still_leaves_a_failed_tag(aws, itwin, lambda_context):
    flow = make_flow(aws, itwin, records=TransferRecords("no-such-table", aws.dynamodb))
    flow.start_invocation(lambda_context)
    fields = aws.put("issues/I/no-table.jpg", PHOTO)
    with pytest.raises(RetryLaterError):
        relay(flow, aws, "issues/I/no-table.jpg", fields, receive=3)
    assert aws.tags("issues/I/no-table.jpg") == {"relay-status": "failed", "relay-error": "RecordStoreError"}
