"""Create the template's resources in moto and seed the sandbox, so every flow runs offline."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import boto3
import requests

from devstack.template import ROOT, Resolver, load
from sandbox.seed import APS_CLIENT, DEMO_HUB, ITWIN_CLIENT, WEBHOOK_SECRET, seed

STACK_NAME = "attachment-relay"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
LOG_DIR = ROOT / ".local"  # the stack's state, its processes' logs and the functions' logs
STATE_FILE = LOG_DIR / "stack.json"

# Sandbox credentials the local secrets hold. They are only valid against the local sandbox.


@dataclass
class LocalStack:
    """Where the local stack runs and what it created; `env()` is what a function sees."""

    moto_url: str
    sandbox_url: str
    resources: dict[str, str] = field(default_factory=dict)
    functions: dict[str, dict[str, str]] = field(default_factory=dict)
    handlers: dict[str, dict[str, str]] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    api_url: str = ""
    """Where `python -m devstack api` serves the template's API, while it runs."""

    def aws_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def env(self, function: str) -> dict[str, str]:
        return {**self.functions[function], **self.aws_env(), "AWS_LAMBDA_FUNCTION_NAME": function}

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def save(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path = STATE_FILE) -> LocalStack:
        if not path.exists():
            raise SystemExit("the local stack is not running: start it with `make stack-up`")
        data = json.loads(path.read_text())
        # State files of other versions may lack a field (defaults fill it) or have one this one does not know.
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def shown(path: Path) -> str:
    """A path as the user can paste it: relative to the current directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def provision(moto_url: str, sandbox_url: str, stack_name: str = STACK_NAME) -> LocalStack:
    """Build every resource the template declares, reading names, keys and settings from it."""
    template = load()
    resolver = Resolver(
        template,
        parameters={},
        pseudo={
            "AWS::StackName": stack_name,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::NoValue": "",
        },
    )
    # Locally every vendor, token endpoints included, is the sandbox: the one origin the secrets may name.
    resolver.parameters = {
        **resolver.param_defaults(),
        "ItwinApiUrl": sandbox_url,
        "ApsApiUrl": sandbox_url,
        "AllowedTokenHosts": sandbox_url,
        "ApsHubId": DEMO_HUB,
    }
    stack = LocalStack(moto_url, sandbox_url)
    seed(sandbox_url)  # the sandbox's own demo data: one definition for `make sandbox` and the stack

    for logical, res in resolver.resources("AWS::SecretsManager::Secret").items():
        _create_secret(stack, resolver, logical, res["Properties"], sandbox_url)
    for logical, res in resolver.resources("AWS::DynamoDB::Table").items():
        _create_table(stack, resolver, logical, res["Properties"], stack_name)
    queues = resolver.resources("AWS::SQS::Queue")
    # Dead-letter queues first: the others name them in their redrive policy.
    for logical in sorted(queues, key=lambda q: "RedrivePolicy" in queues[q].get("Properties", {})):
        _create_queue(stack, resolver, logical, queues[logical].get("Properties", {}), stack_name)
    for logical, res in resolver.resources("AWS::S3::Bucket").items():
        _create_bucket(stack, resolver, logical, res["Properties"], stack_name)
    for logical in resolver.resources("AWS::Serverless::LayerVersion"):
        resolver.refs[logical] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{logical}:1"
    for logical, res in resolver.resources("AWS::Serverless::Function").items():
        props = res["Properties"]
        stack.functions[logical] = resolver.function_environment(logical)
        stack.handlers[logical] = {"code_uri": props["CodeUri"], "handler": props["Handler"]}
        events = props.get("Events", {})
        for event in events.values():
            if event["Type"] == "SQS":
                stack.resources[f"{logical}.queue_arn"] = resolver.resolve(event["Properties"]["Queue"])
    return stack


def _create_secret(stack: LocalStack, resolver: Resolver, logical: str, props: dict[str, Any], sandbox: str) -> None:
    name = resolver.resolve(props["Name"])
    if logical == "WebhookSecret":
        value: dict[str, Any] = {"current": WEBHOOK_SECRET}
    elif "itwin" in logical.lower():
        value = {
            "client_id": ITWIN_CLIENT[0],
            "client_secret": ITWIN_CLIENT[1],
            "token_url": f"{sandbox}/connect/token",
            "scope": "itwin-platform",
        }
    else:
        refresh = requests.post(
            f"{sandbox}/__sandbox/aps/refresh-tokens", json={"client_id": APS_CLIENT[0]}, timeout=10
        ).json()["refresh_token"]
        value = {
            "client_id": APS_CLIENT[0],
            "client_secret": APS_CLIENT[1],
            "token_url": f"{sandbox}/authentication/v2/token",
            "scope": "data:read data:write data:create",
            "refresh_token": refresh,
        }
    arn = stack.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
    resolver.refs[logical] = arn
    stack.resources[logical] = arn


def _create_table(stack: LocalStack, resolver: Resolver, logical: str, props: dict[str, Any], stack_name: str) -> None:
    name = f"{stack_name}-{logical}"
    ddb = stack.client("dynamodb")
    args: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    ddb.create_table(**args)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    resolver.refs[logical] = name
    resolver.attrs[(logical, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
    stack.resources[logical] = name


def _create_queue(stack: LocalStack, resolver: Resolver, logical: str, props: dict[str, Any], stack_name: str) -> None:
    name = f"{stack_name}-{logical}"
    attributes: dict[str, str] = {}
    for key in ("VisibilityTimeout", "MessageRetentionPeriod"):
        if key in props:
            attributes[key] = str(resolver.resolve(props[key]))
    if "RedrivePolicy" in props:
        redrive = resolver.resolve(props["RedrivePolicy"])
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": redrive["deadLetterTargetArn"], "maxReceiveCount": int(redrive["maxReceiveCount"])}
        )
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
    resolver.refs[logical] = url
    resolver.attrs[(logical, "Arn")] = arn
    resolver.attrs[(logical, "QueueName")] = name
    stack.resources[logical] = url
    stack.resources[f"{logical}.arn"] = arn


def _create_bucket(stack: LocalStack, resolver: Resolver, logical: str, props: dict[str, Any], stack_name: str) -> None:
    # A bucket without BucketName (the access log bucket) gets a generated one on AWS: here, a fixed one.
    name = resolver.resolve(props["BucketName"]) if "BucketName" in props else f"{stack_name}-{logical}".lower()
    s3 = stack.client("s3")
    s3.create_bucket(Bucket=name)
    if props.get("VersioningConfiguration"):
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
    if props.get("BucketEncryption"):
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                # CloudFormation says ServerSideEncryptionByDefault where the S3 API says Apply...
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
            },
        )
    if props.get("PublicAccessBlockConfiguration"):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    notifications = resolver.resolve(props.get("NotificationConfiguration", {}))
    queue_configs = [
        {
            "QueueArn": q["Queue"],
            "Events": [q["Event"]],
            "Filter": {"Key": {"FilterRules": q["Filter"]["S3Key"]["Rules"]}},
        }
        for q in notifications.get("QueueConfigurations", [])
    ]
    if queue_configs:
        # `devstack deliver` with no function name delivers to the function these queues feed.
        stack.resources[f"{logical}.notifies"] = ",".join(sorted({q["QueueArn"] for q in queue_configs}))
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration={"QueueConfigurations": queue_configs}
        )
    resolver.refs[logical] = name
    resolver.attrs[(logical, "Arn")] = f"arn:aws:s3:::{name}"
    stack.resources[logical] = name
