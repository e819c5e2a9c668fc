"""devstack without a server: notifications completed as AWS sends them, sample events localized, `make help`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.invoke import layer_paths
from devstack.notifications import complete_notification, is_test_event, localize_event, objects_in
from tests.conftest import ROOT, load_event

BUCKET = "attachment-relay-uploads-123456789012"


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def moto_body(key: str, etag: str, when: datetime | None = None) -> str:
    """What moto 5 sends: no versionId, no sequencer."""
    when = when or datetime.now(UTC) + timedelta(seconds=1)
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": key.replace(" ", "+"), "size": 1, "eTag": etag}},
    }
    return json.dumps({"Records": [record]})


def put(s3: Any, key: str, body: bytes) -> tuple[str, str]:
    answer = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return answer["VersionId"], answer["ETag"].strip('"')


def test_the_version_the_put_created_is_filled_in_even_after_an_overwrite(s3):
    v1, e1 = put(s3, "issues/I-1/a b.jpg", b"monday")
    first = moto_body("issues/I-1/a b.jpg", e1)
    v2, e2 = put(s3, "issues/I-1/a b.jpg", b"tuesday")
    obj = json.loads(complete_notification(s3, first))["Records"][0]["s3"]["object"]
    assert obj["versionId"] == v1
    assert re.fullmatch(r"[0-9A-F]{16}", obj["sequencer"])
    assert objects_in(complete_notification(s3, moto_body("issues/I-1/a b.jpg", e2)))[0].version_id == v2


def test_bodies_that_need_nothing_are_left_as_they_are(s3):
    _, etag = put(s3, "issues/I-1/x.jpg", b"x")
    named = {"bucket": {"name": BUCKET}, "object": {"key": "k", "versionId": "v"}}
    with_version = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": named}]})
    test_event = load_event("s3-test-event.json")["Records"][0]["body"]
    for body in ("not json", "[1]", test_event, with_version):
        assert complete_notification(s3, body) == body
    assert is_test_event(test_event)
    assert not is_test_event("not json")
    # A version deleted before delivery cannot be named: the record keeps its eTag identity.
    gone = moto_body("issues/I-1/x.jpg", etag)
    for version in s3.list_object_versions(Bucket=BUCKET, Prefix="issues/I-1/x.jpg")["Versions"]:
        s3.delete_object(Bucket=BUCKET, Key="issues/I-1/x.jpg", VersionId=version["VersionId"])
    assert complete_notification(s3, gone) == gone


def test_a_version_newer_than_the_event_is_not_the_one_it_names(s3):
    v1, etag = put(s3, "issues/I-1/same.jpg", b"same bytes")
    body = moto_body("issues/I-1/same.jpg", etag, datetime.now(UTC))
    time.sleep(1.1)  # LastModified has whole seconds
    v2, _ = put(s3, "issues/I-1/same.jpg", b"same bytes")  # identical bytes, a second version, after the event
    assert objects_in(complete_notification(s3, body))[0].version_id == v1
    assert objects_in(complete_notification(s3, moto_body("issues/I-1/same.jpg", etag)))[0].version_id == v2


def test_sample_events_get_the_local_version_and_say_so(s3):
    event = load_event("s3-put-issue-photo.json")
    (sample,) = objects_in(event["Records"][0]["body"])
    assert sample.version_id  # samples carry one, as AWS sends it for the versioned bucket
    before = json.dumps(event)
    missing, notes = localize_event(s3, event)
    assert missing == event
    assert notes == [f"s3://{BUCKET}/{sample.key}: no such object in the local bucket; upload it first"]
    version, _ = put(s3, sample.key, (ROOT / "events" / "objects" / "photo.jpg").read_bytes())
    localized, notes = localize_event(s3, event)
    assert objects_in(localized["Records"][0]["body"])[0].version_id == version
    change = f"versionId {sample.version_id} -> {version} (the local version with the event's eTag)"
    assert notes == [f"s3://{BUCKET}/{sample.key}: {change}"]
    assert json.dumps(event) == before  # the caller's event is not changed
    assert localize_event(s3, localized) == (localized, [])


def test_the_function_imports_its_layers_from_the_template():
    assert layer_paths("S3ToItwinFunction") == [ROOT / "layers" / "relay"]
    assert (ROOT / "layers" / "relay" / "relay" / "__init__.py").exists()


def test_make_help_lists_every_target_with_one_line():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):(?!=)", makefile, flags=re.MULTILINE))
    phony = set(re.search(r"^\.PHONY: (.*)$", makefile, flags=re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    assert targets == phony
    make = shutil.which("make")
    assert make, "make builds and tests this project"
    shown = subprocess.run([make, "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = shown.splitlines()
    listed = [line.split()[1] for line in lines]
    assert sorted(listed) == sorted(targets)
    assert all(len(line.split(maxsplit=2)) == 3 for line in lines)  # `make <target>  <what it does>`
