"""Signed iTwin webhooks over real HTTP: the sandbox (or a test) signs, the local gateway serves POST /webhooks/itwin,
ItwinWebhooksFunction verifies and queues, ArchiveFunction copies. Every row of issue 7's tables."""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.invoke import invoke, load_handler, loaded_module
from relay.flows.itwin_webhooks import sign
from sandbox.seed import WEBHOOK_SECRET
from sandbox.webhooks import webhook_event
from tests.conftest import load_event
from tests.integration.conftest import Api, Harness, sha256

pytestmark = pytest.mark.integration

FUNCTION = "ItwinWebhooksFunction"
ROTATED = "rotated-itwin-webhook-secret-abcdef0123456789"
PARENT_FIELD = {"issues": "issueId", "forms": "formId"}


class Hooks:
    """Deliveries to the local gateway's open route, signed as iTwin signs them (or not)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.url = api.url + "/webhooks/itwin"
        self.harness = api.harness

    def body(self, event_type: str, kind: str, parent: str, attachment: str, message_id: str | None = None) -> bytes:
        content: dict[str, Any] = {"attachmentId": attachment, PARENT_FIELD[kind]: parent}
        if kind == "forms":
            content["discipline"] = "Civil"
        event = webhook_event(event_type, content)
        if message_id:
            event["messageId"] = message_id
        return json.dumps(event).encode()

    def post(self, raw: bytes, signature: str | None = "valid", secret: str = WEBHOOK_SECRET) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if signature == "valid":
            headers["Signature"] = sign(secret, raw)
        elif signature is not None:
            headers["Signature"] = signature
        return requests.post(self.url, data=raw, headers=headers, timeout=30)

    def post_headers(self, raw: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
        """A request with exactly these headers, repeats included (requests folds a repeated name)."""
        parts = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            connection.putrequest("POST", parts.path)
            for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(raw))), *headers]:
                connection.putheader(name, value)
            connection.endheaders(raw)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def record(self, record_id: str) -> dict[str, Any] | None:
        item = (
            self.harness.stack.client("dynamodb")
            .get_item(
                TableName=self.harness.stack.resources["WebhookDeliveriesTable"],
                Key={"id": {"S": record_id}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return {k: v.get("S", v.get("N")) for k, v in item.items()} if item else None

    def set_secret(self, current: str, previous: str | None = None) -> None:
        """Rotate WebhookSecret in Secrets Manager, and let the warm container see it (as its cache expiring would)."""
        value = {"current": current, **({"previous": previous} if previous else {})}
        self.harness.stack.client("secretsmanager").put_secret_value(
            SecretId=self.harness.stack.resources["WebhookSecret"], SecretString=json.dumps(value)
        )
        load_handler(self.harness.stack, FUNCTION)
        loaded_module(FUNCTION).flow.secrets.provider.clear_cache()


@pytest.fixture
def hooks(api: Api) -> Iterator[Hooks]:
    hooks = Hooks(api)
    yield hooks
    hooks.set_secret(WEBHOOK_SECRET)


# -- the event table ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["issues", "forms"])
def test_an_attached_event_archives_that_attachment_once(hooks: Hooks, api: Api, harness: Harness, kind: str):
    parent = harness.new_parent(kind)
    data = b"site photo \x00\xff" * 100
    attachment = api.attach(kind, parent, "crack.jpg", data, caption="north wall")
    body = hooks.body(f"{kind}.attachmentAttached.v1", kind, parent, attachment)
    answer = hooks.post(body)
    assert (answer.status_code, answer.json()) == (202, {"status": "queued"})
    assert harness.queue_depth("ArchiveQueue") == 1
    api.archive_pump()
    key = f"archive/{kind}/{parent}/{attachment}/crack.jpg"
    assert list(api.archived(kind, parent)) == [key]
    head = harness.s3.head_object(Bucket=harness.bucket, Key=key)
    assert head["Metadata"]["sha256"] == sha256(data)
    assert head["Metadata"]["caption"] == "north wall"
    message = json.loads(body)["messageId"]
    delivered = hooks.record(f"delivery#{message}")
    assert delivered is not None
    assert (delivered["state"], delivered["action"]) == ("done", "queued")
    assert hooks.record(f"archive#{kind}/{parent}/{attachment}")["status"] == "archived"  # type: ignore[index]


@pytest.mark.parametrize("kind", ["issues", "forms"])
def test_an_unattached_event_tags_the_copy_and_keeps_it(hooks: Hooks, api: Api, harness: Harness, kind: str):
    parent = harness.new_parent(kind)
    attachment = api.attach(kind, parent, "plan.pdf", b"%PDF plan")
    assert hooks.post(hooks.body(f"{kind}.attachmentAttached.v1", kind, parent, attachment)).status_code == 202
    api.archive_pump()
    key = f"archive/{kind}/{parent}/{attachment}/plan.pdf"
    answer = hooks.post(hooks.body(f"{kind}.attachmentUnattached.v1", kind, parent, attachment))
    assert (answer.status_code, answer.json()) == (202, {"status": "unattached"})
    assert harness.tags(key)["relay-status"] == "unattached"
    assert harness.s3.get_object(Bucket=harness.bucket, Key=key)["Body"].read() == b"%PDF plan"
    record = hooks.record(f"unattached#{kind}/{parent}/{attachment}")
    assert record is not None
    assert (record["status"], record["copies"], record["keys"]) == ("unattached", "1", key)
    assert harness.queue_depth("ArchiveQueue") == 0


def test_an_unattached_event_with_no_copy_is_recorded_and_changes_nothing(hooks: Hooks, harness: Harness):
    parent = harness.new_parent("issues")
    answer = hooks.post(hooks.body("issues.attachmentUnattached.v1", "issues", parent, "never-archived"))
    assert answer.status_code == 202
    assert hooks.record(f"unattached#issues/{parent}/never-archived")["copies"] == "0"  # type: ignore[index]
    assert harness.s3.list_objects_v2(Bucket=harness.bucket, Prefix=f"archive/issues/{parent}/").get("KeyCount") == 0


@pytest.mark.parametrize("event_type", ["issues.issueCreated.v1", "forms.attachmentRenamed.v1", "iTwins.deleted.v1"])
def test_another_validly_signed_event_is_acknowledged_and_ignored(hooks: Hooks, harness: Harness, event_type: str):
    raw = json.dumps(webhook_event(event_type, {"issueId": "I-1"})).encode()
    answer = hooks.post(raw)
    assert (answer.status_code, answer.json()) == (202, {"status": "ignored"})
    assert harness.queue_depth("ArchiveQueue") == 0
    assert hooks.record(f"delivery#{json.loads(raw)['messageId']}")["action"] == "ignored"  # type: ignore[index]


def test_the_sandbox_signed_sender_reaches_the_gateway(hooks: Hooks, api: Api, harness: Harness):
    form = harness.new_parent("forms")
    attachment = api.attach("forms", form, "report.pdf", b"%PDF sent by the sandbox")
    sent = harness.admin(
        "POST",
        "webhooks/send",
        {
            "url": hooks.url,
            "secret": WEBHOOK_SECRET,
            "eventType": "forms.attachmentAttached.v1",
            "content": {"attachmentId": attachment, "formId": form, "discipline": "Civil"},
        },
    )
    assert sent["status"] == 202
    api.archive_pump()
    assert list(api.archived("forms", form)) == [f"archive/forms/{form}/{attachment}/report.pdf"]


# -- bad deliveries -----------------------------------------------------------------------------------------


def _forgeries(body: bytes) -> list[tuple[str, list[tuple[str, str]]]]:
    valid = sign(WEBHOOK_SECRET, body)
    digest = valid.removeprefix("sha256=")
    return [
        ("no header", []),
        ("empty header", [("Signature", "")]),
        ("sha1 prefix", [("Signature", "sha1=" + digest[:40])]),
        ("no prefix", [("Signature", digest)]),
        ("upper-case hex", [("Signature", "sha256=" + digest.upper())]),
        ("upper-case prefix", [("Signature", "SHA256=" + digest)]),
        ("whitespace around", [("Signature", f" {valid} ")]),
        ("truncated", [("Signature", valid[:-2])]),
        ("not hex", [("Signature", "sha256=" + "z" * 64)]),
        ("another secret", [("Signature", sign("x" * 40, body))]),
        ("another body", [("Signature", sign(WEBHOOK_SECRET, body + b" "))]),
        ("repeated header", [("Signature", valid), ("Signature", valid)]),
        ("repeated, one good", [("Signature", valid), ("Signature", "sha256=" + "0" * 64)]),
    ]


def test_every_forged_or_malformed_signature_gets_the_same_401_and_does_nothing(hooks: Hooks, harness: Harness):
    body = hooks.body("issues.attachmentAttached.v1", "issues", harness.new_parent("issues"), "att-forged")
    answers = {}
    for name, headers in _forgeries(body):
        status, text = hooks.post_headers(body, headers)
        assert status == 401, name
        answers[name] = text
    assert len(set(answers.values())) == 1  # no answer says which part of the check failed
    assert json.loads(next(iter(answers.values())))["code"] == "Unauthorized"
    assert WEBHOOK_SECRET.encode() not in next(iter(answers.values()))
    changed = bytearray(body)
    changed[10] ^= 1
    assert hooks.post(bytes(changed), sign(WEBHOOK_SECRET, body)).status_code == 401  # one byte changed
    assert harness.queue_depth("ArchiveQueue") == 0
    assert hooks.record(f"delivery#{json.loads(body)['messageId']}") is None  # not even deduplicated
    # The genuine delivery is still accepted afterwards.
    assert hooks.post(body).status_code == 202


def test_a_refused_delivery_logs_neither_the_secret_nor_the_expected_signature(harness: Harness):
    raw = json.dumps(webhook_event("issues.attachmentAttached.v1", {"attachmentId": "a", "issueId": "I"})).encode()
    expected = sign(WEBHOOK_SECRET, raw).removeprefix("sha256=")
    near_miss = "sha256=" + expected[:-1] + ("0" if expected[-1] != "0" else "1")
    log = io.StringIO()
    event = {"body": raw.decode(), "headers": {"Signature": near_miss}, "multiValueHeaders": {"Signature": [near_miss]}}
    answer = invoke(harness.stack, FUNCTION, event, log=log)
    assert answer["statusCode"] == 401
    text = log.getvalue() + answer["body"]
    assert "signature check failed" in text  # the refusal is logged ...
    for secret in (WEBHOOK_SECRET, expected, expected[:16]):
        assert secret not in text  # ... without what would let a caller forge the next one


def test_a_body_over_the_limit_is_413_before_it_is_checked(hooks: Hooks, harness: Harness):
    raw = b'{"pad": "' + b"x" * (256 * 1024) + b'"}'
    answer = hooks.post(raw)  # validly signed, and still refused: the size comes first
    assert (answer.status_code, answer.json()["code"]) == (413, "PayloadTooLarge")
    assert hooks.post(raw, signature=None).status_code == 413
    assert harness.queue_depth("ArchiveQueue") == 0


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'"text"', b'{"eventType": "issues.attachmentAttached.v1"}', b"\xff\xfe"],
    ids=["not-json", "array", "string", "no-messageId", "not-utf8"],
)
def test_bad_json_after_a_valid_signature_is_400(hooks: Hooks, harness: Harness, raw: bytes):
    answer = hooks.post(raw)
    assert (answer.status_code, answer.json()["code"]) == (400, "BadRequest")
    assert harness.queue_depth("ArchiveQueue") == 0


@pytest.mark.parametrize(
    "content",
    [{"attachmentId": "../etc", "issueId": "I-1"}, {"issueId": "I-1"}, {"attachmentId": "a", "formId": "F"}, "x"],
    ids=["traversal", "no-attachment", "wrong-parent-field", "not-an-object"],
)
def test_an_attached_event_that_names_no_usable_attachment_is_400(hooks: Hooks, harness: Harness, content: Any):
    raw = json.dumps(webhook_event("issues.attachmentAttached.v1", content)).encode()
    assert hooks.post(raw).status_code == 400
    assert harness.queue_depth("ArchiveQueue") == 0


# -- exactly once -------------------------------------------------------------------------------------------


def test_twenty_redeliveries_some_concurrent_leave_one_copy(hooks: Hooks, api: Api, harness: Harness):
    issue = harness.new_parent("issues")
    data = b"one copy only" * 1000
    attachment = api.attach("issues", issue, "once.jpg", data)
    body = hooks.body("issues.attachmentAttached.v1", "issues", issue, attachment)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def deliver() -> None:
        start.wait()
        response = hooks.post(body)
        with lock:
            answers.append({"status": response.status_code, "outcome": response.json()["status"]})

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(9):
        response = hooks.post(body)
        answers.append({"status": response.status_code, "outcome": response.json()["status"]})
    assert harness.queue_depth("ArchiveQueue") == 1  # one archive request for 19 deliveries
    api.archive_pump()
    response = hooks.post(body)  # the 20th, after the copy exists
    answers.append({"status": response.status_code, "outcome": response.json()["status"]})
    assert len(answers) == 20
    assert [a["status"] for a in answers] == [202] * 20
    outcomes = sorted(a["outcome"] for a in answers)
    assert outcomes == ["duplicate"] * 19 + ["queued"]
    assert list(api.archived("issues", issue)) == [f"archive/issues/{issue}/{attachment}/once.jpg"]
    assert harness.queue_depth("ArchiveQueue") == 0
    # iTwin could also send the same attachment under a new messageId: the archive is idempotent on the id.
    assert hooks.post(hooks.body("issues.attachmentAttached.v1", "issues", issue, attachment)).status_code == 202
    downloads = harness.counts().get("itwin.issues.download", 0)
    api.archive_pump()
    assert len(api.archived("issues", issue)) == 1
    assert harness.counts().get("itwin.issues.download", 0) == downloads  # nothing downloaded again


def test_twenty_deliveries_racing_in_two_containers_queue_one_archive(hooks: Hooks, harness: Harness):
    """The local gateway runs one invocation at a time; API Gateway does not. Two receivers ("containers") built
    as the function builds its own, 20 threads at once against the same DynamoDB table and queue."""
    from relay.flows.itwin_webhooks import build_itwin_webhooks
    from relay.settings import Settings

    settings = Settings.load(harness.stack.env(FUNCTION))
    containers = [build_itwin_webhooks(settings) for _ in range(2)]
    issue = harness.new_parent("issues")
    raw = hooks.body("issues.attachmentAttached.v1", "issues", issue, "raced")
    event = {"body": raw.decode(), "headers": {"Signature": sign(WEBHOOK_SECRET, raw)}, "multiValueHeaders": None}
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def deliver(i: int) -> None:
        start.wait()
        answer = containers[i % 2].handle(event)
        body = json.loads(answer["body"])
        with lock:
            outcomes.append((answer["statusCode"], body.get("status") or body["code"]))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One did the work. Each other one was acknowledged only after that work was done; one that found it still
    # in flight answered 503, and iTwin resends it.
    assert outcomes.count((202, "queued")) == 1
    assert set(outcomes) - {(202, "queued")} <= {(202, "duplicate"), (503, "Unavailable")}
    assert harness.queue_depth("ArchiveQueue") == 1
    assert json.loads(hooks.post(raw).text) == {"status": "duplicate"}  # the resend, after the work is done
    harness.empty_queue("ArchiveQueue")


def test_a_claim_whose_invocation_died_is_taken_over_by_the_resend(hooks: Hooks, harness: Harness):
    """The first delivery claimed the messageId, then its Lambda was killed (timeout, crash) before it queued."""
    from relay.aws.deliveries import STALE_CLAIM_SECONDS, WebhookDeliveries

    issue = harness.new_parent("issues")
    raw = hooks.body("issues.attachmentAttached.v1", "issues", issue, "after-crash")
    message = json.loads(raw)["messageId"]
    table = harness.stack.resources["WebhookDeliveriesTable"]
    dead = WebhookDeliveries(table, harness.stack.client("dynamodb"), ttl_seconds=3600)
    dead.clock = lambda: time.time() - STALE_CLAIM_SECONDS - 1  # claimed just over the stale window ago
    dead.claim(message, "issues.attachmentAttached.v1")
    answer = hooks.post(raw)  # iTwin's resend, ~5 s later
    assert (answer.status_code, answer.json()) == (202, {"status": "queued"})
    assert harness.queue_depth("ArchiveQueue") == 1
    harness.empty_queue("ArchiveQueue")


def test_a_resend_while_the_first_delivery_is_in_flight_is_not_acknowledged(hooks: Hooks, harness: Harness):
    from relay.aws.deliveries import WebhookDeliveries

    raw = hooks.body("issues.attachmentAttached.v1", "issues", harness.new_parent("issues"), "in-flight")
    message = json.loads(raw)["messageId"]
    live = WebhookDeliveries(
        harness.stack.resources["WebhookDeliveriesTable"], harness.stack.client("dynamodb"), ttl_seconds=3600
    )
    live.claim(message, "issues.attachmentAttached.v1")  # another container is working on it right now
    answer = hooks.post(raw)
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")  # iTwin will send it again
    assert harness.queue_depth("ArchiveQueue") == 0


# -- rotation -----------------------------------------------------------------------------------------------


def test_rotation_accepts_current_and_previous_then_only_current(hooks: Hooks, harness: Harness):
    def delivery() -> bytes:
        return json.dumps(webhook_event("issues.issueCreated.v1", {"issueId": "I-rot"})).encode()

    hooks.set_secret(ROTATED, previous=WEBHOOK_SECRET)
    assert hooks.post(delivery(), secret=ROTATED).status_code == 202
    assert hooks.post(delivery(), secret=WEBHOOK_SECRET).status_code == 202  # iTwin not switched over yet
    hooks.set_secret(ROTATED)  # the rotation is finished: `previous` removed
    assert hooks.post(delivery(), secret=ROTATED).status_code == 202
    assert hooks.post(delivery(), secret=WEBHOOK_SECRET).status_code == 401


# -- an archive that fails for good ---------------------------------------------------------------------------


def test_an_archive_of_a_missing_attachment_is_recorded_failed_and_ends_in_the_dlq(
    hooks: Hooks, api: Api, harness: Harness
):
    issue = harness.new_parent("issues")
    missing = f"gone-{uuid.uuid4().hex[:8]}"  # attached, then deleted in iTwin before the worker ran
    assert hooks.post(hooks.body("issues.attachmentAttached.v1", "issues", issue, missing)).status_code == 202
    report = api.archive_pump()
    assert report.invocations >= 5  # every delivery up to MaxReceiveCount raised: the message was never deleted
    assert harness.queue_depth("ArchiveQueue") == 0
    assert harness.queue_depth("ArchiveDeadLetterQueue") == 1
    sqs, dlq = harness.stack.client("sqs"), harness.stack.resources["ArchiveDeadLetterQueue"]
    dead = sqs.receive_message(QueueUrl=dlq)
    assert json.loads(dead["Messages"][0]["Body"])["attachmentId"] == missing
    # Received, it is in flight for the queue's visibility timeout, where the next test's `empty_queue` cannot
    # reach it: delete it, or a test run after this one (another order, or under xdist) finds it in the DLQ.
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=dead["Messages"][0]["ReceiptHandle"])
    record = hooks.record(f"archive#issues/{issue}/{missing}")
    assert record is not None
    assert (record["status"], record["code"], record["receives"]) == ("failed", "AttachmentNotFound", "5")
    assert api.archived("issues", issue) == {}


# -- the events/ sample through the Docker-free invoke ---------------------------------------------------------


def test_the_signed_webhook_sample_runs_against_the_local_stack(api: Api, harness: Harness):
    event = load_event("api-itwin-webhook-attached.json")
    assert event["headers"]["Signature"] == sign(WEBHOOK_SECRET, event["body"].encode())  # valid for the local secret
    first = invoke(harness.stack, FUNCTION, event)
    assert (first["statusCode"], json.loads(first["body"])) == (202, {"status": "queued"})
    again = invoke(harness.stack, FUNCTION, event)
    assert (again["statusCode"], json.loads(again["body"])) == (202, {"status": "duplicate"})
    assert harness.queue_depth("ArchiveQueue") == 1
    harness.empty_queue("ArchiveQueue")
