"""Docker-free `sam local invoke`: run a function's handler in this process against the local stack,
and deliver queued messages the way Lambda's SQS event source mapping does."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from devstack.stack import ACCOUNT_ID, REGION, LocalStack
from devstack.template import ROOT, load

_modules: dict[str, ModuleType] = {}


@dataclass
class LambdaContext:
    """What Lambda passes as `context`, with a real clock behind the remaining time."""

    function_name: str = "local"
    timeout_s: float = 120.0
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def function_timeout(function: str) -> float:
    template = load()
    own = template["Resources"][function]["Properties"].get("Timeout")
    return float(own or template.get("Globals", {}).get("Function", {}).get("Timeout", 3))


def load_handler(stack: LocalStack, function: str) -> Callable[[Any, Any], Any]:
    """Import the function's module once per process, with its environment set first, as Lambda does."""
    os.environ.update(stack.env(function))
    spec_info = stack.handlers[function]
    module_name, _, attr = spec_info["handler"].rpartition(".")
    if function not in _modules:
        path = ROOT / spec_info["code_uri"] / f"{module_name.replace('.', '/')}.py"
        spec = importlib.util.spec_from_file_location(f"relay_function_{function}", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _modules[function] = module
    handler: Callable[[Any, Any], Any] = getattr(_modules[function], attr)
    return handler


def invoke(stack: LocalStack, function: str, event: Any, context: LambdaContext | None = None) -> Any:
    handler = load_handler(stack, function)
    os.environ.update(stack.env(function))
    return handler(event, context or LambdaContext(function, function_timeout(function)))


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """A received SQS message in the shape Lambda hands to the function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


@dataclass
class PumpReport:
    invocations: int = 0
    delivered: int = 0
    failed: int = 0


def pump(
    stack: LocalStack,
    function: str,
    *,
    batch_size: int = 10,
    idle_rounds: int = 2,
    max_seconds: float = 300.0,
    retry_delay: int = 0,
    max_invocations: int | None = None,
) -> PumpReport:
    """Poll the function's queue and invoke it until the queue stays empty (bounded in time).

    Failed records get their visibility reset to `retry_delay` seconds instead of waiting out the
    template's visibility timeout, so local retries (and the redrive to the DLQ) happen in seconds.
    """
    queue_arn = stack.resources[f"{function}.queue_arn"]
    queue_url = next(url for k, url in stack.resources.items() if stack.resources.get(f"{k}.arn") == queue_arn)
    sqs = stack.client("sqs")
    report = PumpReport()
    deadline = time.monotonic() + max_seconds
    idle = 0
    while idle < idle_rounds and time.monotonic() < deadline:
        if max_invocations is not None and report.invocations >= max_invocations:
            break
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=batch_size,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            idle += 1
            continue
        idle = 0
        event = {"Records": [sqs_record(m, queue_arn) for m in messages]}
        report.invocations += 1
        try:
            result = invoke(stack, function, event)
            failed_ids = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        except Exception:  # noqa: BLE001 - a crashed invocation fails the whole batch, as on Lambda
            failed_ids = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed_ids:
                report.failed += 1
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=retry_delay
                )
            else:
                report.delivered += 1
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return report
