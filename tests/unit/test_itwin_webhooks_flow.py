"""The webhook receiver's decisions, with moto in-process: 413/401/400, dedupe, attached, unattached, 503s."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from relay.aws.deliveries import STALE_CLAIM_SECONDS, Claim, WebhookDeliveries
from relay.aws.queues import WorkQueue
from relay.errors import ConfigurationError, RecordStoreError
from relay.flows.itwin_webhooks import WebhookSecrets, sign
from relay.flows.itwin_webhooks.flow import ItwinWebhooksFlow, raw_body
from relay.settings import Settings
from tests.unit.archive_fakes import FakeSqs

SECRET = "k" * 40


class Secrets:
    def __init__(self, value: WebhookSecrets | Exception) -> None:
        self.value = value

    def get(self, *, force: bool = False) -> WebhookSecrets:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def delivery(event_type: str, content: Any, message_id: str = "m-1") -> bytes:
    return json.dumps({"messageId": message_id, "eventType": event_type, "content": content}).encode()


def event(body: bytes, signature: str | None = None, *, b64: bool = False) -> dict[str, Any]:
    headers = {"Signature": signature if signature is not None else sign(SECRET, body)}
    text = base64.b64encode(body).decode() if b64 else body.decode()
    return {"body": text, "isBase64Encoded": b64, "headers": headers, "multiValueHeaders": None}


@pytest.fixture
def sqs() -> FakeSqs:
    return FakeSqs()


@pytest.fixture
def flow(aws, sqs) -> ItwinWebhooksFlow:
    settings = Settings.load({}, archive_bucket=aws.bucket, webhook_max_body_bytes=4096)
    deliveries = WebhookDeliveries(aws.tables["WebhookDeliveriesTable"], aws.dynamodb, ttl_seconds=3600)
    secrets: Any = Secrets(WebhookSecrets(SECRET))  # the store's one method, without Secrets Manager
    return ItwinWebhooksFlow(settings, secrets, deliveries, WorkQueue(sqs, "q"), aws.s3, sleep=lambda _: None)


def status(answer: dict[str, Any]) -> tuple[int, Any]:
    return answer["statusCode"], json.loads(answer["body"])


ATTACHED = delivery("forms.attachmentAttached.v1", {"attachmentId": "att-1", "formId": "F-1", "discipline": "x"})


def test_an_attached_event_queues_one_archive_by_id_and_a_redelivery_queues_nothing(flow, sqs):
    assert status(flow.handle(event(ATTACHED))) == (202, {"status": "queued"})
    assert status(flow.handle(event(ATTACHED))) == (202, {"status": "duplicate"})
    assert len(sqs.delivered) == 1
    assert sqs.delivered[0]["parentId"] == "F-1"


def test_a_base64_body_verifies_over_its_bytes(flow, sqs):
    assert flow.handle(event(ATTACHED, b64=True))["statusCode"] == 202


@pytest.mark.parametrize(
    ("body", "signature", "code"),
    [
        (ATTACHED, "sha256=" + "0" * 64, 401),
        (ATTACHED, "", 401),
        (b"x" * 5000, None, 413),
        (b"{not json", None, 400),
        (b"[1, 2]", None, 400),
        (json.dumps({"eventType": "x"}).encode(), None, 400),
        (delivery("issues.attachmentAttached.v1", {"attachmentId": "../x"}), None, 400),
    ],
)
def test_bad_deliveries_are_answered_before_anything_is_done(flow, sqs, body, signature, code):
    assert flow.handle(event(body, signature))["statusCode"] == code
    assert sqs.delivered == []


def test_every_401_says_the_same_thing(flow):
    answers = {flow.handle(event(ATTACHED, s))["body"] for s in ("", "sha1=abc", "sha256=" + "0" * 64)}
    assert len(answers) == 1
    assert SECRET not in answers.pop()


def test_another_event_type_is_acknowledged_and_ignored(flow, sqs):
    body = delivery("forms.somethingElse.v1", {})
    assert status(flow.handle(event(body))) == (202, {"status": "ignored"})
    assert sqs.delivered == []


def test_an_unattached_event_tags_the_copy_and_never_deletes_it(flow, aws):
    key = "archive/issues/I-1/att-9/photo.jpg"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"kept")
    aws.s3.put_object_tagging(Bucket=aws.bucket, Key=key, Tagging={"TagSet": [{"Key": "mine", "Value": "1"}]})
    body = delivery("issues.attachmentUnattached.v1", {"attachmentId": "att-9", "issueId": "I-1"})
    assert status(flow.handle(event(body))) == (202, {"status": "unattached"})
    assert aws.tags(key) == {"mine": "1", "relay-status": "unattached"}
    assert aws.s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read() == b"kept"
    assert flow.deliveries.get("unattached#issues/I-1/att-9") is not None


def test_a_queue_that_fails_answers_503_and_releases_the_claim_for_the_resend(flow, sqs):
    sqs.errors.append(ClientError({"Error": {"Code": "InternalError"}}, "SendMessageBatch"))
    assert flow.handle(event(ATTACHED))["statusCode"] == 503
    assert status(flow.handle(event(ATTACHED))) == (202, {"status": "queued"})  # iTwin's resend does the work


def test_an_unusable_secret_answers_500_without_its_value(flow):
    flow.secrets = Secrets(ConfigurationError("webhook secret is shorter than 32 characters"))
    answer = flow.handle(event(ATTACHED))
    assert answer["statusCode"] == 500
    assert "32" not in answer["body"]


def test_raw_body_of_a_bad_base64_is_empty():
    assert raw_body({"body": "!!!", "isBase64Encoded": True}) == b""
    assert raw_body({"body": None}) == b""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deliveries(aws, clock) -> WebhookDeliveries:
    return WebhookDeliveries(aws.tables["WebhookDeliveriesTable"], aws.dynamodb, ttl_seconds=3600, clock=clock)


def test_a_claim_is_done_only_once_its_work_is(deliveries):
    claim, token = deliveries.claim("m-9", "x")
    assert (claim, bool(token)) == (Claim.OWNED, True)
    assert deliveries.claim("m-9", "x") == (Claim.IN_FLIGHT, "")  # never acknowledged before the work is done
    deliveries.done("m-9", "queued")
    assert deliveries.claim("m-9", "x") == (Claim.DONE, "")


def test_a_claim_whose_invocation_died_is_taken_over_after_the_stale_window(deliveries, clock):
    deliveries.claim("m-9", "x")
    clock.now += STALE_CLAIM_SECONDS - 1
    assert deliveries.claim("m-9", "x")[0] is Claim.IN_FLIGHT
    clock.now += 2  # past the function's 5 s timeout: the first invocation is gone
    assert deliveries.claim("m-9", "x")[0] is Claim.OWNED


def test_release_deletes_only_its_own_claim(deliveries, clock):
    _, first = deliveries.claim("m-9", "x")
    clock.now += STALE_CLAIM_SECONDS + 1
    claim, second = deliveries.claim("m-9", "x")  # taken over
    assert claim is Claim.OWNED
    deliveries.release("m-9", first)  # the first invocation, late, must not erase the second's claim
    assert deliveries.claim("m-9", "x")[0] is Claim.IN_FLIGHT
    deliveries.release("m-9", second)
    assert deliveries.claim("m-9", "x")[0] is Claim.OWNED


def test_a_redelivery_while_the_first_is_in_flight_is_not_acknowledged(flow, sqs):
    flow.deliveries.claim("m-1", "forms.attachmentAttached.v1")  # another container holds the work
    answer = flow.handle(event(ATTACHED))
    assert (answer["statusCode"], answer["headers"]["Retry-After"]) == (503, "1")
    assert sqs.delivered == []
    flow.deliveries.done("m-1", "queued")
    assert status(flow.handle(event(ATTACHED))) == (202, {"status": "duplicate"})


def test_work_done_but_not_settled_is_still_acknowledged(flow, sqs, monkeypatch):
    def fail(*_: Any) -> None:
        raise RecordStoreError("settling a delivery failed: ProvisionedThroughputExceededException")

    monkeypatch.setattr(flow.deliveries, "done", fail)
    assert status(flow.handle(event(ATTACHED))) == (202, {"status": "queued"})  # not 503: no resend queues again
    assert len(sqs.delivered) == 1


def test_deeply_nested_json_is_a_400_not_a_crash(flow):
    assert flow.handle(event(b"[" * 100_000 + b"]" * 100_000))["statusCode"] in (400, 413)
    nested = b"[" * 2000 + b"]" * 2000
    flow.settings = Settings.load({}, archive_bucket=flow.bucket, webhook_max_body_bytes=len(nested))
    assert flow.handle(event(nested))["statusCode"] == 400


def test_a_base64_body_over_the_limit_is_413_before_the_secret_is_read(flow):
    flow.secrets = Secrets(AssertionError("the secret must not be read"))  # type: ignore[assignment]
    assert flow.handle(event(b"x" * 5000, "sha256=" + "0" * 64, b64=True))["statusCode"] == 413


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, 202),  # no Content-Type stated: the signature governs
        ("application/json", 202),
        ("Application/JSON; charset=utf-8", 202),
        ("application/cloudevents+json", 202),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
    ],
)
def test_a_signed_delivery_must_say_it_is_json_when_it_says_anything(flow, sqs, content_type, expected):
    request = event(ATTACHED)
    if content_type is not None:
        request["headers"]["content-type"] = content_type
    code, body = status(flow.handle(request))
    assert code == expected
    if expected == 415:
        assert body["code"] == "UnsupportedMediaType"
        assert sqs.delivered == []


def test_an_unsigned_delivery_is_401_whatever_its_content_type(flow, sqs):
    request = event(ATTACHED, signature="sha256=" + "0" * 64)
    request["headers"]["Content-Type"] = "text/plain"
    assert status(flow.handle(request))[0] == 401
