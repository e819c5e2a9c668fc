"""Unit tier: no network at all (pytest-socket); moto runs in-process when AWS is needed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def create_tables_from_template(dynamodb: Any) -> dict[str, str]:
    """Create every DynamoDB table of template.yaml in moto, with its key schema and GSIs as written there."""
    from devstack.template import load

    names: dict[str, str] = {}
    for logical, resource in load()["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        args: dict[str, Any] = {
            "TableName": logical,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props["BillingMode"],
        }
        if props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        dynamodb.create_table(**args)
        names[logical] = logical
    return names


@dataclass
class Aws:
    """moto in-process, laid out as template.yaml lays out AWS: a versioned bucket and the tables."""

    s3: Any
    dynamodb: Any
    bucket: str
    tables: dict[str, str]

    def put(self, key: str, body: bytes, **metadata: str) -> dict[str, Any]:
        """Upload and return the notification fields S3 would send (versionId and eTag)."""
        answer = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata)
        return {"versionId": answer["VersionId"], "eTag": answer["ETag"].strip('"')}

    def tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        args = {"VersionId": version_id} if version_id else {}
        tag_set = self.s3.get_object_tagging(Bucket=self.bucket, Key=key, **args)["TagSet"]
        return {t["Key"]: t["Value"] for t in tag_set}

    def record(self, identity: str) -> dict[str, Any]:
        item = self.dynamodb.get_item(
            TableName=self.tables["TransfersTable"], Key={"upload": {"S": identity}}, ConsistentRead=True
        ).get("Item", {})
        return {k: v.get("S", v.get("N", v.get("SS"))) for k, v in item.items()}


@pytest.fixture
def aws(aws_env: None) -> Iterator[Aws]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        s3.create_bucket(Bucket="uploads")
        s3.put_bucket_versioning(Bucket="uploads", VersioningConfiguration={"Status": "Enabled"})
        yield Aws(s3, dynamodb, "uploads", create_tables_from_template(dynamodb))
