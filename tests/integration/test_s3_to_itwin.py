"""S3 → iTwin over real HTTP: the user's story, and every row of the issue's exactly-once and errors tables."""

from __future__ import annotations

import json
import threading
import time

import pytest

from relay.aws.s3objects import ObjectStore
from relay.errors import ObjectStoreError, VendorConnectionError
from relay.vendors.itwin import ITwinClient
from tests.integration.conftest import Harness, lambda_sqs_event, s3_message, sha256
from tests.s3_roles import WithoutListBucket

pytestmark = pytest.mark.integration
PHOTO = b"\x89PNG fake photo bytes " * 400


def test_upload_becomes_an_attachment_with_caption_and_tags(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/Cracked concrete – bay 3 ü.png"
    version = harness.put(key, PHOTO, caption="=?utf-8?q?Caf=C3=A9_crack?=", binding="TypeOfDefect")
    report = harness.deliver()
    assert report.failed == 0
    (att,) = harness.attachments(issue)
    assert att["fileName"] == "Cracked concrete – bay 3 ü.png"
    assert att["caption"] == "Café crack"
    assert att["binding"] == "TypeOfDefect"
    assert att["sha256"] == sha256(PHOTO)
    assert harness.tags(key, version) == {"relay-status": "attached", "relay-attachment-id": att["id"]}
    record = harness.record_for(key)
    assert record["status"] == "attached"
    assert record["attachment_id"] == att["id"]
    assert int(record["bytes"]) == len(PHOTO)


def test_forms_upload(harness: Harness):
    form = harness.new_parent("forms")
    harness.put(f"forms/{form}/report.pdf", b"%PDF-1.4 report")
    harness.deliver()
    (att,) = harness.attachments(form, "forms")
    assert att["fileName"] == "report.pdf"
    assert att["size"] == len(b"%PDF-1.4 report")


def test_user_tags_are_kept(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/tagged.jpg"
    harness.s3.put_object(Bucket=harness.bucket, Key=key, Body=b"jpg", Tagging="project=bridge&site=north")
    harness.deliver()
    tags = harness.tags(key)
    assert tags["project"] == "bridge"
    assert tags["site"] == "north"
    assert tags["relay-status"] == "attached"


# -- Exactly once -----------------------------------------------------------------------------


def test_same_notification_twice_makes_one_attachment(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/dup.jpg"
    harness.put(key, PHOTO)
    harness.deliver()
    etag = harness.etag(key)
    harness.send_raw(s3_message(harness.bucket, key, etag))  # a duplicate arrives as a new message
    harness.deliver()
    assert len(harness.attachments(issue)) == 1


def test_concurrent_duplicates_make_one_attachment(harness: Harness):

    from relay.flows.s3_to_itwin.flow import RetryLaterError

    # Two containers, as Lambda would run them: each with its own clients and state.
    containers = [harness.flow() for _ in range(2)]
    issue = harness.new_parent()
    key = f"issues/{issue}/concurrent.jpg"
    harness.put(key, PHOTO)
    harness.empty_queue("UploadQueue")
    etag = harness.etag(key)
    body = s3_message(harness.bucket, key, etag)
    harness.fault("itwin.issues.upload", latency_ms=800)  # keep the first one in flight
    outcomes: list[object] = []

    def run(container) -> None:
        try:
            outcomes.extend(container.handle_message("m", body))
        except RetryLaterError as exc:
            outcomes.append(exc.__cause__)

    threads = [threading.Thread(target=run, args=(c,)) for c in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(harness.attachments(issue)) == 1
    # The loser is told to come back later; its message returns to the queue and then sees the result.
    assert sorted(type(o).__name__ for o in outcomes) == ["IdempotencyAlreadyInProgressError", "TransferOutcome"]
    harness.admin("DELETE", "faults")
    (again,) = containers[1].handle_message("m", body)
    assert again.status == "attached"
    assert len(harness.attachments(issue)) == 1


class SimulatedCrash(BaseException):
    """Stands for the runtime killing the function: not an Exception, so nothing cleans up."""


class CrashingItwin(ITwinClient):
    """An iTwin client whose container dies in the middle of the PUT."""

    def upload(self, *args, **kwargs):
        raise SimulatedCrash()


def test_death_between_post_and_put_resumes_to_the_recorded_location(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/crash.jpg"
    harness.put(key, PHOTO)
    etag = harness.etag(key)
    harness.empty_queue("UploadQueue")
    dying = harness.flow(timeout_s=1.5, itwin=CrashingItwin(harness.itwin_requestor()))
    event = lambda_sqs_event(s3_message(harness.bucket, key, etag), "m-crash")
    with pytest.raises(SimulatedCrash):
        dying.handle_message("m-crash", s3_message(harness.bucket, key, etag))
    assert harness.record_for(key)["step"] == "created"
    (orphan,) = harness.attachments(issue)
    assert orphan["size"] is None
    creates = harness.counts()["itwin.issues.create"]
    time.sleep(1.6)  # the idempotency lock of the dead invocation expires with its timeout
    result = harness.invoke(event)
    assert result == {"batchItemFailures": []}
    (att,) = harness.attachments(issue)
    assert att["id"] == orphan["id"]
    assert att["sha256"] == sha256(PHOTO)
    assert harness.counts()["itwin.issues.create"] == creates  # no second POST


def test_put_failure_within_invocation_returns_and_resumes_without_second_post(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/flaky-put.jpg"
    harness.put(key, PHOTO)
    before = harness.counts().get("itwin.issues.create", 0)
    harness.fault("itwin.issues.upload", fail_next=[{"status": 503, "count": 5}])
    harness.deliver(max_invocations=1)  # every PUT of this delivery fails; the message returns to the queue
    record = harness.record_for(key)
    assert record["step"] == "created"
    assert record["status"] == "retrying"
    harness.admin("DELETE", "faults")
    harness.deliver()
    (att,) = harness.attachments(issue)
    assert att["sha256"] == sha256(PHOTO)
    assert harness.counts()["itwin.issues.create"] - before == 1


@pytest.mark.parametrize(
    ("status", "code", "tag"), [(404, "AttachmentNotFound", "failed"), (413, "RequestTooLarge", "rejected")]
)
def test_put_failing_for_good_leaves_no_orphan_metadata(harness: Harness, status, code, tag):
    issue = harness.new_parent()
    key = f"issues/{issue}/doomed.jpg"
    harness.put(key, PHOTO)
    harness.fault("itwin.issues.upload", fail_next=[{"status": status, "code": code}])
    harness.deliver()
    assert harness.attachments(issue) == []
    assert harness.tags(key) == {"relay-status": tag, "relay-error": code}
    assert harness.counts()["itwin.issues.delete"] >= 1


def test_new_version_of_the_same_key_is_a_new_attachment(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/progress.jpg"
    v1 = harness.put(key, b"monday")
    harness.deliver()
    v2 = harness.put(key, b"tuesday")
    harness.deliver()
    assert sorted(a["sha256"] for a in harness.attachments(issue)) == sorted([sha256(b"monday"), sha256(b"tuesday")])
    assert harness.tags(key, v1)["relay-status"] == "attached"
    assert harness.tags(key, v2)["relay-status"] == "attached"


class LosingItwin(ITwinClient):
    """An iTwin client whose create lands, and whose answer is then lost (a reset after the request)."""

    def create_attachment(self, *args, **kwargs):
        super().create_attachment(*args, **kwargs)
        raise VendorConnectionError("answer lost", code="Timeout")


def test_lost_create_answer_is_adopted_not_repeated(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/lost-answer.jpg"
    harness.put(key, PHOTO)
    # The sandbox creates the metadata, then the client's connection dies before the answer.
    flow = harness.flow(itwin=LosingItwin(harness.itwin_requestor()))
    (outcome,) = flow.handle_message("m", s3_message(harness.bucket, key, harness.etag(key)))
    assert outcome.status == "attached"
    (att,) = harness.attachments(issue)
    assert att["sha256"] == sha256(PHOTO)
    assert harness.tags(key)["relay-attachment-id"] == att["id"]


# -- Errors -------------------------------------------------------------------------------------


def test_401_rereads_the_token_then_succeeds(harness: Harness):
    issue = harness.new_parent()
    harness.put(f"issues/{issue}/a.jpg", PHOTO)
    harness.deliver()
    harness.admin("POST", "tokens/revoke", {})  # every cached token is now refused
    tokens_before = harness.counts()["itwin.token"]
    key = f"issues/{issue}/b.jpg"
    harness.put(key, PHOTO)
    harness.deliver()
    assert harness.tags(key)["relay-status"] == "attached"
    assert harness.counts()["itwin.token"] == tokens_before + 1


def test_401_twice_is_failed(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/unauth.jpg"
    harness.put(key, PHOTO)
    harness.fault("itwin.issues.create", fail_next=[{"status": 401, "code": "InvalidToken", "count": 2}])
    harness.deliver()
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "InvalidToken"}


@pytest.mark.parametrize(
    ("kind", "status", "code", "tag"),
    [
        ("issues", 403, "InsufficientPermissions", "failed"),
        ("forms", 404, "FormDataNotFound", "failed"),
        ("issues", 422, "InvalidAttachmentRequest", "rejected"),
    ],
)
def test_permanent_vendor_errors_are_tagged_with_the_vendor_code(harness: Harness, kind, status, code, tag):
    parent = harness.new_parent(kind)
    key = f"{kind}/{parent}/x.jpg"
    harness.put(key, PHOTO)
    harness.fault(f"itwin.{kind}.create", fail_next=[{"status": status, "code": code}])
    report = harness.deliver()
    assert report.failed == 0  # permanent: not retried
    assert harness.tags(key) == {"relay-status": tag, "relay-error": code}
    assert harness.record_for(key)["error_code"] == code


def test_unknown_issue_is_failed_with_issue_not_found(harness: Harness):
    key = "issues/NO-SUCH-ISSUE/x.jpg"
    harness.put(key, PHOTO)
    harness.deliver()
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "IssueNotFound"}


def test_422_details_are_logged(harness: Harness, logs):
    issue = harness.new_parent()
    harness.put(f"issues/{issue}/bad.jpg", b"x")
    # The 422 body of ../shared/api/000: InvalidAttachmentRequest with a MissingRequiredProperty detail.
    detail = {
        "code": "MissingRequiredProperty",
        "message": "Required property is missing. The request must include a valid 'fileName' property.",
        "target": "fileName",
    }
    harness.fault(
        "itwin.issues.create",
        fail_next=[
            {
                "status": 422,
                "code": "InvalidAttachmentRequest",
                "message": "Cannot create attachment.",
                "details": [detail],
            }
        ],
    )
    harness.deliver()
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if "transfer finished" in line]
    assert lines[-1]["outcome"] == "rejected"
    assert lines[-1]["error_code"] == "InvalidAttachmentRequest"
    assert lines[-1]["vendor_details"] == [detail]


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_next": [{"status": 429, "retry_after": 1}]},
        {"fail_next": [{"status": 500}, {"status": 503}]},
        {"fail_next": [{"drop": True}]},
    ],
)
def test_transient_errors_are_retried_within_the_invocation(harness: Harness, fault):
    waits: list[float] = []
    flow = harness.flow(sleep=waits.append)  # retry waits recorded instead of slept
    issue = harness.new_parent()
    key = f"issues/{issue}/transient.jpg"
    harness.put(key, PHOTO)
    harness.fault("itwin.issues.upload", **fault)
    (outcome,) = flow.handle_message("m", s3_message(harness.bucket, key, harness.etag(key)))
    assert outcome.status == "attached"
    assert harness.tags(key)["relay-status"] == "attached"
    assert len(harness.attachments(issue)) == 1
    assert len(waits) == len(fault["fail_next"])
    if fault["fail_next"][0].get("retry_after"):
        assert waits[0] >= 1


@pytest.mark.parametrize(
    ("entry", "creates"),
    [
        ({"status": 500, "after_work": True}, 1),  # it landed: found by the listing, never POSTed again
        ({"status": 502, "after_work": True}, 1),
        ({"drop": True, "after_work": True}, 1),  # the answer lost on the way back
        ({"status": 500}, 2),  # it did nothing: the listing finds nothing, so the POST is sent again
        ({"status": 503}, 2),  # the server did not take it: retried as it is
    ],
    ids=["500-after-work", "502-after-work", "reset-after-work", "500-no-work", "503"],
)
def test_a_create_failing_after_or_before_its_work_makes_one_attachment(harness: Harness, entry, creates):
    waits: list[float] = []
    flow = harness.flow(sleep=waits.append)
    issue = harness.new_parent()
    key = f"issues/{issue}/create-fault.jpg"
    harness.put(key, PHOTO)
    before = harness.counts().get("itwin.issues.create", 0)
    harness.fault("itwin.issues.create", fail_next=[entry])
    (outcome,) = flow.handle_message("m", s3_message(harness.bucket, key, harness.etag(key)))
    assert outcome.status == "attached"
    (att,) = harness.attachments(issue)
    assert att["sha256"] == sha256(PHOTO)
    assert harness.counts()["itwin.issues.create"] - before == creates
    assert harness.tags(key)["relay-attachment-id"] == att["id"]


def test_persistent_outage_ends_in_the_dlq_visibly_failed_without_orphans(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/outage.jpg"
    harness.put(key, PHOTO)
    harness.fault("itwin.issues.upload", error_rate=1.0, error_status=503)
    report = harness.deliver(max_seconds=120)
    assert report.invocations == 5  # MaxReceiveCount's default, read by the local stack from the template
    assert harness.queue_depth("UploadDeadLetterQueue") == 1
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "InternalServerError"}
    assert harness.attachments(issue) == []
    assert harness.record_for(key)["status"] == "failed"


def fast_timeout_relay(harness: Harness):
    return harness.flow({"RELAY_HTTP_READ_TIMEOUT": "0.5"}, sleep=lambda s: None)


def test_put_timeout_is_retried(harness: Harness):
    relay = fast_timeout_relay(harness)
    issue = harness.new_parent()
    key = f"issues/{issue}/slow-put.jpg"
    harness.put(key, PHOTO)
    etag = harness.etag(key)
    uploads = harness.counts().get("itwin.issues.upload", 0)
    harness.fault("itwin.issues.upload", fail_next=[{"latency_ms": 1500}])  # the first PUT's answer is too late
    (outcome,) = relay.handle_message("m", s3_message(harness.bucket, key, etag))
    assert outcome.status == "attached"
    assert harness.counts()["itwin.issues.upload"] - uploads == 2
    time.sleep(1.2)  # let the slow first PUT finish: it rewrites the same bytes
    (att,) = harness.attachments(issue)
    assert att["sha256"] == sha256(PHOTO)


def test_create_timeout_is_adopted_not_repeated(harness: Harness):
    relay = fast_timeout_relay(harness)
    issue = harness.new_parent()
    key = f"issues/{issue}/slow-create.jpg"
    harness.put(key, PHOTO)
    etag = harness.etag(key)
    body = s3_message(harness.bucket, key, etag)
    creates = harness.counts().get("itwin.issues.create", 0)
    harness.fault("itwin.issues.create", fail_next=[{"latency_ms": 1000}])
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    with pytest.raises(RetryLaterError):  # the answer was lost and nothing to adopt yet: come back later
        relay.handle_message("m", body)
    assert harness.record_for(key)["step"] == "creating"
    time.sleep(1.0)  # meanwhile the slow create lands on the vendor's side
    (outcome,) = relay.handle_message("m", body)
    assert outcome.status == "attached"
    (att,) = harness.attachments(issue)
    assert att["id"] == outcome.attachment_id
    assert att["sha256"] == sha256(PHOTO)
    assert harness.counts()["itwin.issues.create"] - creates == 1


def test_object_deleted_before_processing_is_recorded_and_skipped(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/gone.jpg"
    harness.put(key, PHOTO)
    harness.s3.delete_object(Bucket=harness.bucket, Key=key)
    listing = harness.s3.list_object_versions(Bucket=harness.bucket, Prefix=key)
    for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        harness.s3.delete_object(Bucket=harness.bucket, Key=key, VersionId=v["VersionId"])
    report = harness.deliver()
    assert report.failed == 0
    record = harness.record_for(key)
    assert record["status"] == "skipped"
    assert record["error_code"] == "ObjectDeleted"
    assert harness.attachments(issue) == []


def test_malformed_message_fails_only_its_record(harness: Harness, logs):
    issue = harness.new_parent()
    harness.put(f"issues/{issue}/fine.jpg", PHOTO)
    harness.send_raw("this is not an S3 event")
    report = harness.deliver(idle_rounds=1, max_seconds=10)
    assert report.failed >= 1
    assert len(harness.attachments(issue)) == 1
    lines = [json.loads(x) for x in logs.getvalue().splitlines() if "malformed message" in x]
    line = lines[0]
    assert line["message_id"]
    assert line["error"] == "MalformedMessage: message body is not JSON"


def test_unknown_prefix_is_rejected_without_crashing_the_batch(harness: Harness):
    issue = harness.new_parent()
    harness.put(f"issues/{issue}/ok.jpg", PHOTO)
    harness.s3.put_object(Bucket=harness.bucket, Key="photos/stray.jpg", Body=b"x")
    harness.send_raw(s3_message(harness.bucket, "photos/stray.jpg", harness.etag("photos/stray.jpg")))
    report = harness.deliver()
    assert report.failed == 0
    assert harness.tags("photos/stray.jpg") == {"relay-status": "rejected", "relay-error": "UnknownPrefix"}
    assert len(harness.attachments(issue)) == 1


@pytest.mark.parametrize(
    ("key_tail", "code"),
    [("../x.jpg", "DotKeySegment"), ("a/b/c.jpg", "NestedKey"), ("x\u0007.jpg", "ControlCharacter")],
)
def test_bad_keys_are_rejected_with_a_named_error(harness: Harness, key_tail, code):
    key = f"issues/{key_tail}" if key_tail.startswith("..") else f"issues/ISSUE-X/{key_tail}"
    harness.s3.put_object(Bucket=harness.bucket, Key=key, Body=b"x")
    harness.deliver()
    assert harness.record_for(key)["error_code"] == code


def test_too_large_is_rejected_before_any_metadata(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/huge.bin"
    harness.put(key, b"0" * (30 * 1024 * 1024 + 1))
    creates = harness.counts().get("itwin.issues.create", 0)
    harness.deliver()
    assert harness.tags(key) == {"relay-status": "rejected", "relay-error": "RequestTooLarge"}
    assert harness.counts().get("itwin.issues.create", 0) == creates


def test_empty_file_is_rejected(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/empty.jpg"
    harness.put(key, b"")
    harness.deliver()
    assert harness.tags(key) == {"relay-status": "rejected", "relay-error": "EmptyFile"}
    assert harness.attachments(issue) == []


def test_location_on_a_foreign_host_is_refused_and_no_bytes_are_sent(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/exfil.jpg"
    harness.put(key, PHOTO)
    harness.admin("PUT", "config", {"location_base": "http://files.attacker.example"})
    uploads = harness.counts().get("itwin.issues.upload", 0)
    harness.deliver()
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "UnsafeLocation"}
    assert harness.counts().get("itwin.issues.upload", 0) == uploads
    assert harness.attachments(issue) == []  # the metadata it created was deleted
    assert "files.attacker.example" in harness.record_for(key)["error_message"]


class UntaggableObjects(ObjectStore):
    """S3 as the deployed role sees it outside issues/* and forms/*: tagging is denied."""

    def tag(self, *args, **kwargs):
        raise ObjectStoreError("tagging s3://bucket/misc/x.jpg failed: AccessDenied")


def test_untaggable_unknown_prefix_is_still_recorded_and_not_retried(harness: Harness):
    """On AWS the role may tag only issues/* and forms/*: a stray key's outcome lives in the record."""
    flow = harness.flow(objects=UntaggableObjects(harness.s3))
    harness.s3.put_object(Bucket=harness.bucket, Key="misc/x.jpg", Body=b"x")
    (outcome,) = flow.handle_message("m", s3_message(harness.bucket, "misc/x.jpg", harness.etag("misc/x.jpg")))
    assert outcome.status == "rejected"
    record = harness.record_for("misc/x.jpg")
    assert (record["status"], record["error_code"]) == ("rejected", "UnknownPrefix")


# -- failures that are not vendor errors still end visibly (issue: one error language) ----------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"drop_rate": 1.0}, "TokenEndpointError"),
        ({"error_rate": 1.0, "error_status": 503}, "TokenEndpointError"),
        ({"fail_next": [{"status": 400, "code": "invalid_client", "count": 10}]}, "invalid_client"),
    ],
)
def test_a_token_endpoint_failure_on_the_last_delivery_is_tagged_failed(harness: Harness, fault, code):
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    flow = harness.flow(sleep=lambda s: None)  # a new container: it must mint a token first
    issue = harness.new_parent()
    key = f"issues/{issue}/no-token.jpg"
    harness.put(key, PHOTO)
    harness.fault("itwin.token", **fault)
    body = s3_message(harness.bucket, key, harness.etag(key))
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body, receive_count=1)
    assert harness.record_for(key)["status"] == "retrying"
    with pytest.raises(RetryLaterError):  # the last delivery (MaxReceiveCount 5): on to the DLQ, visibly failed
        flow.handle_message("m", body, receive_count=5)
    tags = harness.tags(key)
    assert tags["relay-status"] == "failed"
    assert tags["relay-error"] == code
    record = harness.record_for(key)
    assert record["status"] == "failed"
    assert harness.attachments(issue) == []


def test_a_batch_whose_every_record_fails_reports_its_failures_without_raising(harness: Harness):
    event = {
        "Records": [
            lambda_sqs_event("not json", "m-bad-1")["Records"][0],
            lambda_sqs_event('{"Records": []}', "m-bad-2")["Records"][0],
        ]
    }
    result = harness.invoke(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-bad-1"}, {"itemIdentifier": "m-bad-2"}]}


# -- what an adversarial probe found (issue: close the holes) ---------------------------------------


def sandbox_host(harness: Harness) -> str:
    return harness.sandbox.split("://", 1)[1]


def test_a_parser_differential_location_gets_neither_the_token_nor_the_file(harness: Harness, trap):
    """`http://127.0.0.1:<trap>\\@<api-host>/…`: urlsplit reads the API host, urllib3 would dial the trap."""
    issue = harness.new_parent()
    key = f"issues/{issue}/differential.jpg"
    harness.put(key, PHOTO)
    harness.admin("PUT", "config", {"location_base": f"http://127.0.0.1:{trap.port}\\@{sandbox_host(harness)}"})
    uploads = harness.counts().get("itwin.issues.upload", 0)
    assert harness.deliver().failed == 0
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "UnsafeLocation"}
    assert trap.connections == 0
    assert harness.counts().get("itwin.issues.upload", 0) == uploads
    assert harness.attachments(issue) == []  # found by listing and deleted, not by an id read from the URL


@pytest.mark.parametrize(
    "location_base",
    ["http://127.0.0.1:99999", "ftp://{host}", "HTTP://{host}", "//{host}", "http://user:pw@{host}"],
)
def test_unusable_locations_fail_visibly_and_leave_no_metadata(harness: Harness, location_base):
    issue = harness.new_parent()
    key = f"issues/{issue}/odd-location.jpg"
    harness.put(key, PHOTO)
    harness.admin("PUT", "config", {"location_base": location_base.format(host=sandbox_host(harness))})
    assert harness.deliver().failed == 0
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "UnsafeLocation"}
    assert harness.record_for(key)["status"] == "failed"
    assert harness.attachments(issue) == []


def test_a_hostile_next_link_during_adoption_gets_no_token(harness: Harness, trap):
    issue = harness.new_parent()
    flow = harness.flow(itwin=LosingItwin(harness.itwin_requestor()))
    for i in range(50):  # a full first page, so the listing has a next link
        key = f"issues/{issue}/older-{i:02d}.jpg"
        harness.put(key, b"older %d" % i)
        harness.flow().handle_message("m", s3_message(harness.bucket, key, harness.etag(key)))
    harness.admin("PUT", "config", {"next_link_base": f"http://127.0.0.1:{trap.port}"})
    key = f"issues/{issue}/lost-then-hostile.jpg"
    harness.put(key, PHOTO)
    body = s3_message(harness.bucket, key, harness.etag(key))
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    with pytest.raises(RetryLaterError, match="CreateUnresolved"):  # never POSTed blind, never failed
        flow.handle_message("m", body)
    assert trap.connections == 0
    harness.admin("PUT", "config", {"next_link_base": None})
    (outcome,) = harness.flow().handle_message("m", body, receive_count=2)
    assert outcome.status == "attached"
    assert len([a for a in harness.attachments(issue) if a["fileName"] == "lost-then-hostile.jpg"]) == 1


def test_two_versions_of_one_key_never_merge_into_one_attachment(harness: Harness):
    """v1 dies between POST and PUT; v2's create answer is lost; v1 resumes: two attachments, each its bytes."""
    issue = harness.new_parent()
    key = f"issues/{issue}/two-versions.jpg"
    v1 = harness.put(key, b"version one bytes")
    body_v1 = s3_message(harness.bucket, key, harness.etag(key), v1)
    with pytest.raises(SimulatedCrash):
        harness.flow(timeout_s=1.5, itwin=CrashingItwin(harness.itwin_requestor())).handle_message("m", body_v1)
    v2 = harness.put(key, b"version two bytes")
    body_v2 = s3_message(harness.bucket, key, harness.etag(key), v2)
    (second,) = harness.flow(itwin=LosingItwin(harness.itwin_requestor())).handle_message("m", body_v2)
    time.sleep(1.6)  # the dead v1 invocation's idempotency lock expires with its timeout
    (first,) = harness.flow().handle_message("m", body_v1, receive_count=2)
    assert (first.status, second.status) == ("attached", "attached")
    assert first.attachment_id != second.attachment_id
    by_id = {a["id"]: a for a in harness.attachments(issue)}
    assert by_id[first.attachment_id]["sha256"] == sha256(b"version one bytes")
    assert by_id[second.attachment_id]["sha256"] == sha256(b"version two bytes")
    assert harness.tags(key, v1)["relay-attachment-id"] == first.attachment_id
    assert harness.tags(key, v2)["relay-attachment-id"] == second.attachment_id


def test_a_vendor_that_echoes_the_authorization_header_leaks_nothing(harness: Harness, logs):
    issue = harness.new_parent()
    key = f"issues/{issue}/echo.jpg"
    harness.put(key, PHOTO)
    harness.fault("itwin.issues.create", fail_next=[{"status": 403, "code": "Forbidden", "echo_authorization": True}])
    assert harness.deliver().failed == 0
    record = harness.record_for(key)
    assert record["status"] == "failed"
    assert "[redacted]" in record["error_message"]
    ddb = harness.stack.client("dynamodb")
    idempotency = ddb.scan(TableName=harness.stack.resources["IdempotencyTable"])["Items"]
    for text in (
        logs.getvalue(),
        json.dumps(harness.records()),
        json.dumps(idempotency),
        json.dumps(harness.tags(key)),
    ):
        assert "sbx-itwin-" not in text


@pytest.mark.parametrize(
    ("endpoint", "answer"),
    [
        ("itwin.issues.upload", {"status": 307, "headers": {"Location": "http://127.0.0.1:{trap}/stolen"}}),
        ("itwin.issues.create", {"status": 302, "headers": {"Location": "http://127.0.0.1:{trap}/stolen"}}),
        ("itwin.issues.create", {"status": 200, "headers": {"Location": "{sandbox}/issues/x/attachments/y"}}),
    ],
)
def test_a_redirect_or_an_undocumented_status_is_never_success(harness: Harness, trap, endpoint, answer):
    issue = harness.new_parent()
    key = f"issues/{issue}/redirected.jpg"
    harness.put(key, PHOTO)
    headers = {k: v.format(trap=trap.port, sandbox=harness.sandbox) for k, v in answer["headers"].items()}
    harness.fault(endpoint, fail_next=[{**answer, "headers": headers, "body": ""}])
    assert harness.deliver().failed == 0
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "UnexpectedStatus"}
    assert trap.connections == 0
    assert harness.attachments(issue) == []  # a PUT that "succeeded" by redirect left no orphan behind


def test_a_create_without_location_fails_visibly(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/no-location.jpg"
    harness.put(key, PHOTO)
    harness.fault("itwin.issues.create", fail_next=[{"status": 201, "headers": {}, "body": ""}])
    assert harness.deliver().failed == 0
    assert harness.tags(key) == {"relay-status": "failed", "relay-error": "MissingLocation"}
    assert harness.attachments(issue) == []


def test_a_lost_create_then_an_html_listing_is_retried_not_failed(harness: Harness):
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    issue = harness.new_parent()
    key = f"issues/{issue}/html-listing.jpg"
    harness.put(key, PHOTO)
    body = s3_message(harness.bucket, key, harness.etag(key))
    html = {"status": 200, "headers": {"Content-Type": "text/html"}, "body": "<html>maintenance</html>"}
    harness.fault("itwin.issues.list", fail_next=[html])
    with pytest.raises(RetryLaterError, match="CreateUnresolved"):
        harness.flow(itwin=LosingItwin(harness.itwin_requestor())).handle_message("m", body)
    (outcome,) = harness.flow().handle_message("m", body, receive_count=2)
    assert outcome.status == "attached"
    (att,) = harness.attachments(issue)
    assert att["sha256"] == sha256(PHOTO)


def test_a_head_403_for_a_deleted_version_is_skipped_not_lost(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/deleted-403.jpg"
    version = harness.put(key, PHOTO)
    body = s3_message(harness.bucket, key, harness.etag(key), version)
    harness.s3.delete_object(Bucket=harness.bucket, Key=key, VersionId=version)
    (outcome,) = harness.flow(objects=ObjectStore(WithoutListBucket(harness.s3))).handle_message("m", body)
    assert (outcome.status, outcome.error_code) == ("skipped", "ObjectDeleted")
    assert harness.record_for(key)["status"] == "skipped"


def test_a_head_403_for_an_existing_version_ends_visibly_failed(harness: Harness):
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    issue = harness.new_parent()
    key = f"issues/{issue}/denied-403.jpg"
    version = harness.put(key, PHOTO)
    body = s3_message(harness.bucket, key, harness.etag(key), version)
    flow = harness.flow(objects=ObjectStore(WithoutListBucket(harness.s3, always=True)))
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body, receive_count=5)
    record = harness.record_for(key)
    assert (record["status"], record["error_code"]) == ("failed", "S3Error")
    assert harness.tags(key, version) == {"relay-status": "failed", "relay-error": "S3Error"}


def test_a_version_under_a_delete_marker_is_still_attached(harness: Harness):
    """The version the notification names still exists; a later delete of the key does not undo an upload."""
    issue = harness.new_parent()
    key = f"issues/{issue}/marked.jpg"
    version = harness.put(key, PHOTO)
    body = s3_message(harness.bucket, key, harness.etag(key), version)
    harness.s3.delete_object(Bucket=harness.bucket, Key=key)  # a delete marker, the version stays
    (outcome,) = harness.flow().handle_message("m", body)
    assert outcome.status == "attached"
    assert harness.tags(key, version)["relay-status"] == "attached"


def test_a_token_url_on_an_unlisted_host_never_receives_the_client_secret(harness: Harness, trap):
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    secrets = harness.stack.client("secretsmanager")
    secret_id = harness.stack.resources["ItwinSecret"]
    stored = secrets.get_secret_value(SecretId=secret_id)["SecretString"]
    value = json.loads(stored)
    secrets.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps({**value, "token_url": f"http://127.0.0.1:{trap.port}/token"})
    )
    try:
        issue = harness.new_parent()
        key = f"issues/{issue}/secret-elsewhere.jpg"
        harness.put(key, PHOTO)
        with pytest.raises(RetryLaterError, match="ConfigurationError"):
            harness.flow().handle_message("m", s3_message(harness.bucket, key, harness.etag(key)), receive_count=5)
        assert trap.connections == 0
        assert harness.tags(key) == {"relay-status": "failed", "relay-error": "ConfigurationError"}
    finally:
        secrets.put_secret_value(SecretId=secret_id, SecretString=stored)
