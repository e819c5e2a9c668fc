"""The events/ samples through the Docker-free invoke, the warm path's call counts, and a faulty burst."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from devstack.notifications import localize_event
from relay.aws.s3events import parse_message
from tests.conftest import EVENTS, load_event
from tests.integration.conftest import Harness, s3_message, sha256

pytestmark = pytest.mark.integration
OBJECTS = {"s3-put-issue-photo.json": "photo.jpg", "s3-put-form-report.json": "report.pdf"}


# The RFI sample runs in test_s3_to_rfi.py, against S3ToRfiFunction.
@pytest.mark.parametrize("name", sorted(p.name for p in EVENTS.glob("s3-*.json") if "-rfi-" not in p.name))
def test_every_s3_sample_event_runs_against_the_local_stack(harness: Harness, name: str):
    event = load_event(name)
    uploads = parse_message(event["Records"][0]["body"]).uploads
    versions = {}
    for upload in uploads:
        assert upload.version_id, "samples carry a versionId, as AWS sends for the versioned bucket"
        data = (EVENTS / "objects" / OBJECTS[name]).read_bytes()
        assert upload.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()  # the sample names its object
        put = harness.s3.put_object(Bucket=upload.bucket, Key=upload.key, Body=data)
        versions[upload.key] = put["VersionId"]
    harness.empty_queue("UploadQueue")
    # The sample's AWS versionId cannot exist locally: the devstack invoke command swaps in the uploaded one.
    event, notes = localize_event(harness.s3, event)
    assert len(notes) == len(uploads)
    localized = parse_message(event["Records"][0]["body"]).uploads
    assert {u.key: u.version_id for u in localized} == versions
    result = harness.invoke(event)
    assert result == {"batchItemFailures": []}
    for upload in localized:
        tags = harness.tags(upload.key, upload.version_id)
        assert tags["relay-status"] == "attached", tags
        assert harness.record_for(upload.key)["upload"] == upload.identity  # the versionId identity, as on AWS
        kind, parent, file_name = upload.key.split("/")
        atts = [a for a in harness.attachments(parent, kind) if a["fileName"] == file_name]
        assert atts[-1]["sha256"] == sha256((EVENTS / "objects" / OBJECTS[name]).read_bytes())


def test_warm_invocations_make_no_secret_calls_and_no_new_vendor_connections(harness: Harness):
    import boto3
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    secret_calls: list[str] = []
    client = boto3.client("secretsmanager")
    client.meta.events.register("before-call.secrets-manager", lambda **kw: secret_calls.append(kw["model"].name))
    flow = harness.flow(provider=SecretsProvider(boto3_client=client))  # one warm container
    issue = harness.new_parent()

    def upload(name: str, data: bytes) -> None:
        key = f"issues/{issue}/{name}"
        harness.put(key, data)
        (outcome,) = flow.handle_message("m", s3_message(harness.bucket, key, harness.etag(key)))
        assert outcome.status == "attached"

    upload("cold.jpg", b"cold start")  # the first invocation in this "container" may read secrets and connect
    connections = harness.inspect()["connections"]
    secret_calls.clear()
    for i in range(3):
        upload(f"warm-{i}.jpg", b"warm path %d" % i)
    # The one new connection is this inspect call's own: the function reused its pooled ones.
    assert harness.inspect()["connections"] - connections == 1
    assert secret_calls == []
    assert len(harness.attachments(issue)) == 4


def test_200_notifications_with_duplicates_and_faults_make_200_attachments(harness: Harness):
    rng = random.Random(2026)
    issue = harness.new_parent()
    expected: dict[str, str] = {}
    bodies = []
    for i in range(200):
        data = rng.randbytes(rng.randint(200, 4000))
        key = f"issues/{issue}/photo-{i:03d}.jpg"
        harness.put(key, data)
        expected[f"photo-{i:03d}.jpg"] = sha256(data)
        bodies.append(s3_message(harness.bucket, key, harness.etag(key)))
    for body in rng.sample(bodies, 40):  # 20% delivered twice, as new messages
        harness.send_raw(body)
    # About 10% of uploads meet an injected 429 or 5xx on their create or their PUT.
    harness.fault("itwin.issues.create", error_rate=0.05, error_status=429, retry_after=1)
    harness.fault("itwin.issues.upload", error_rate=0.05, error_status=503)
    report = harness.deliver(max_seconds=600)
    counts = harness.counts()
    attachments = harness.attachments(issue)
    assert len(attachments) == 200
    assert {a["fileName"]: a["sha256"] for a in attachments} == expected
    assert [a for a in attachments if a["size"] is None] == []  # no orphan metadata
    assert report.delivered == 240
    assert harness.queue_depth("UploadDeadLetterQueue") == 0
    assert counts["itwin.issues.create"] >= 200  # faults made some creates repeat...
    assert sum(1 for a in attachments if a["uploads"] == 1) == 200  # ...but each file was PUT once
    statuses = {r["status"] for r in harness.records() if r["key"].startswith(f"issues/{issue}/")}
    assert statuses == {"attached"}


def test_demo_objects_exist():
    assert all((EVENTS / "objects" / f).exists() for f in OBJECTS.values())
    assert Path(EVENTS / "s3-test-event.json").exists()
    assert json.loads(load_event("s3-test-event.json")["Records"][0]["body"])["Event"] == "s3:TestEvent"
