"""Integration tier: moto server and the platform sandbox over real HTTP, provisioned from template.yaml."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from moto.server import ThreadedMotoServer

from devstack.invoke import PumpReport, invoke, pump
from devstack.stack import LocalStack, provision
from sandbox import Sandbox

FUNCTION = "S3ToItwinFunction"


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    sandbox = Sandbox().start()
    stack = provision(f"http://{host}:{port}", sandbox.url)
    os.environ.update(stack.aws_env())
    yield stack
    sandbox.stop()
    moto.stop()


@dataclass
class Harness:
    """What a test drives: the bucket, the queue, the function, and the sandbox's admin API."""

    stack: LocalStack

    @property
    def bucket(self) -> str:
        return self.stack.resources["UploadBucket"]

    @property
    def sandbox(self) -> str:
        return self.stack.sandbox_url

    @property
    def s3(self) -> Any:
        return self.stack.client("s3")

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, f"{self.sandbox}/__sandbox/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def new_parent(self, kind: str = "issues") -> str:
        parent = f"{kind[:-1].upper()}-{uuid.uuid4().hex[:8]}"
        self.admin("POST", f"itwin/{kind}", {"id": parent})
        return parent

    def fault(self, endpoint: str, **options: Any) -> None:
        self.admin("POST", "faults", {"endpoint": endpoint, **options})

    def etag(self, key: str) -> str:
        return str(self.s3.head_object(Bucket=self.bucket, Key=key)["ETag"]).strip('"')

    def put(self, key: str, body: bytes, **metadata: str) -> str:
        return str(self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata).get("VersionId"))

    def deliver(self, **options: Any) -> PumpReport:
        return pump(self.stack, FUNCTION, **options)

    def deployed_relay(self) -> Any:
        """The relay object inside the function's module, as a warm container holds it."""
        from devstack.invoke import load_handler, loaded_module

        load_handler(self.stack, FUNCTION)
        return loaded_module(FUNCTION).relay

    def invoke(self, event: Any, context: Any = None) -> Any:
        return invoke(self.stack, FUNCTION, event, context)

    def tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        args = {"VersionId": version_id} if version_id else {}
        tag_set = self.s3.get_object_tagging(Bucket=self.bucket, Key=key, **args)["TagSet"]
        return {t["Key"]: t["Value"] for t in tag_set}

    def inspect(self) -> dict[str, Any]:
        data: dict[str, Any] = self.admin("GET", "inspect")
        return data

    def attachments(self, parent: str, kind: str = "issues") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.inspect()["itwin"][kind].get(parent, [])
        return result

    def records(self) -> list[dict[str, Any]]:
        ddb = self.stack.client("dynamodb")
        items = ddb.scan(TableName=self.stack.resources["TransfersTable"], ConsistentRead=True)["Items"]
        return [{k: v.get("S", v.get("N")) for k, v in item.items()} for item in items]

    def record_for(self, key: str) -> dict[str, Any]:
        matches = [r for r in self.records() if r["key"] == key]
        assert len(matches) == 1, matches
        return matches[0]

    def queue_depth(self, logical: str) -> int:
        attrs = self.stack.client("sqs").get_queue_attributes(
            QueueUrl=self.stack.resources[logical],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def empty_queue(self, logical: str) -> None:
        """Delete whatever is queued (PurgeQueue is limited to once a minute)."""
        sqs = self.stack.client("sqs")
        url = self.stack.resources[logical]
        for _ in range(100):
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get(
                "Messages", []
            )
            if not messages:
                return
            for m in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def send_raw(self, body: str) -> None:
        self.stack.client("sqs").send_message(QueueUrl=self.stack.resources["UploadQueue"], MessageBody=body)

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = self.inspect()["requests"]
        return result


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The function's structured log lines, as CloudWatch would receive them."""
    from relay.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    underlying = logging.getLogger(logger.service)  # Powertools logs through the stdlib logger of its service
    underlying.addHandler(handler)
    yield stream
    underlying.removeHandler(handler)


@pytest.fixture
def waits(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits of the deployed function, recorded instead of slept: fast, and checkable."""
    recorded: list[float] = []
    monkeypatch.setattr(Harness(local_stack).deployed_relay().itwin.requestor, "sleep", recorded.append)
    return recorded


@pytest.fixture
def harness(local_stack: LocalStack, waits: list[float]) -> Iterator[Harness]:
    h = Harness(local_stack)
    h.admin("DELETE", "faults")
    h.admin("PUT", "config", {"location_base": None, "max_upload_bytes": 30 * 1024 * 1024})
    for logical in ("UploadQueue", "UploadDeadLetterQueue"):
        h.empty_queue(logical)
    yield h
    h.admin("DELETE", "faults")


def lambda_sqs_event(body: str, message_id: str = "m-1", receive_count: int = 1) -> dict[str, Any]:
    """What Lambda hands the function for one SQS message."""
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": "r",
                "body": body,
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:attachment-relay-UploadQueue",
                "awsRegion": "us-east-1",
            }
        ]
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_message(bucket: str, key: str, etag: str | None = None, version_id: str | None = None) -> str:
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key, safe="/")}
    if etag:
        obj["eTag"] = etag
    if version_id:
        obj["versionId"] = version_id
    return json.dumps(
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}]}
    )
