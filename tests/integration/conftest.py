"""Integration tier: moto server and the platform sandbox over real HTTP, provisioned from template.yaml."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from moto.server import ThreadedMotoServer

from devstack.invoke import LambdaContext, PumpReport, invoke, pump
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
    # Short backoff for the deployed function, set as a user would (retry-after is still honoured).
    os.environ.update(RELAY_RETRY_BASE_DELAY="0.01", RELAY_RETRY_MAX_DELAY="0.05")
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

    def flow(self, env: dict[str, str] | None = None, *, timeout_s: float = 60, **injected: Any) -> Any:
        """A container's S3 → iTwin flow, built through its constructor with `injected` collaborators."""
        from relay.flows.s3_to_itwin import build_s3_to_itwin

        flow = build_s3_to_itwin(self.settings(env), **injected)
        flow.start_invocation(LambdaContext(FUNCTION, timeout_s=timeout_s))
        return flow

    def settings(self, env: dict[str, str] | None = None) -> Any:
        from relay.settings import Settings

        return Settings.load(self.stack.env(FUNCTION) | (env or {}))

    def itwin_requestor(self, env: dict[str, str] | None = None, **injected: Any) -> Any:
        from relay.vendors.factory import itwin_requestor

        return itwin_requestor(self.settings(env), **injected)

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
        rows = [{k: v.get("S", v.get("N", v.get("SS"))) for k, v in item.items()} for item in items]
        return [r for r in rows if not r["upload"].startswith("claim#")]  # claims share the table

    def claims(self) -> dict[str, str]:
        """Which upload owns each vendor attachment (the adoption rule's claims)."""
        ddb = self.stack.client("dynamodb")
        items = ddb.scan(TableName=self.stack.resources["TransfersTable"], ConsistentRead=True)["Items"]
        return {i["upload"]["S"]: i["owner"]["S"] for i in items if i["upload"]["S"].startswith("claim#")}

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
def harness(local_stack: LocalStack) -> Iterator[Harness]:
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


class Trap:
    """A listener on another port of this machine that counts every connection and keeps what arrives."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                self.received += conn.recv(65536)
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    t = Trap()
    yield t
    t.close()


# -- the attachments API over real HTTP, through the local gateway ------------------------------------

API_FUNCTION, ARCHIVE_FUNCTION = "AttachmentsApiFunction", "ArchiveFunction"


def sigv4(access_key: str = "testing", secret_key: str = "testing") -> Any:  # noqa: S107 - moto's local keys
    """A caller's SigV4 signer for execute-api, as awscurl signs."""
    from devstack.sigv4 import SigV4

    return SigV4(access_key, secret_key, region="us-east-1")


@dataclass
class Api:
    """The local gateway's URL, and calls signed as an IAM caller would sign them (redirects not followed)."""

    url: str
    harness: Harness

    def call(self, method: str, path: str, *, signed: bool = True, **options: Any) -> requests.Response:
        options.setdefault("timeout", 60)
        return requests.request(  # noqa: S113 - options carries the timeout
            method, self.url + path, auth=sigv4() if signed else None, allow_redirects=False, **options
        )

    def get(self, path: str, **options: Any) -> requests.Response:
        return self.call("GET", path, **options)

    def post(self, path: str, **options: Any) -> requests.Response:
        return self.call("POST", path, **options)

    def attach(self, kind: str, parent: str, name: str, data: bytes | None, **fields: str) -> str:
        """An attachment made in the sandbox through iTwin's own API (metadata, then the file unless None)."""
        from relay.vendors.itwin import ITwinClient

        client = ITwinClient(self.harness.itwin_requestor())
        created = client.create_attachment(kind, parent, name, fields.get("caption"), fields.get("binding"))  # type: ignore[arg-type]
        if data is not None:
            client.upload(created.location, lambda: data, len(data))
        assert created.attachment_id
        return created.attachment_id

    def archive_pump(self, **options: Any) -> PumpReport:
        return pump(self.harness.stack, ARCHIVE_FUNCTION, **options)

    def archived(self, kind: str, parent: str) -> dict[str, dict[str, Any]]:
        """Every version under the parent's archive prefix, by key (a key with two versions was copied twice)."""
        s3 = self.harness.s3
        versions = s3.list_object_versions(Bucket=self.harness.bucket, Prefix=f"archive/{kind}/{parent}/")
        found: dict[str, dict[str, Any]] = {}
        for v in versions.get("Versions", []):
            assert v["Key"] not in found, f"{v['Key']} was written twice"
            found[v["Key"]] = v
        return found


@pytest.fixture(scope="session")
def gateway_url(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from devstack.gateway import LocalGateway
    from devstack.invoke import open_log

    with (
        open_log(tmp_path_factory.mktemp("gateway") / "functions.log") as log,
        LocalGateway.for_stack(local_stack, log=log) as gateway,
    ):
        yield gateway.url


@pytest.fixture
def api(harness: Harness, gateway_url: str) -> Iterator[Api]:
    from relay.flows.attachments_api import use_service

    for logical in ("ArchiveQueue", "ArchiveDeadLetterQueue"):
        harness.empty_queue(logical)
    yield Api(gateway_url, harness)
    use_service(None)  # a test that swapped the container's service gets a fresh one next time
