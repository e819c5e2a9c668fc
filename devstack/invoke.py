"""Docker-free `sam local invoke`: run a function's handler in this process against the local stack,
and deliver queued messages the way Lambda's SQS event source mapping does."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import math
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from devstack.notifications import S3Object, complete_notification, is_test_event, objects_in
from devstack.stack import ACCOUNT_ID, REGION, LocalStack, shown
from devstack.template import ROOT, shared

_modules: dict[str, ModuleType] = {}


class UnknownFunctionError(LookupError):
    """Not a function of the template (or it has no queue to deliver from); the message lists the ones that are."""

    def __str__(self) -> str:
        return str(self.args[0])


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
    template = shared()  # read on every invocation: no copy
    own = template["Resources"][function]["Properties"].get("Timeout")
    return float(own or template.get("Globals", {}).get("Function", {}).get("Timeout", 3))


def layer_paths(function: str) -> list[Path]:
    """The source folders of the template's own layers that the function uses (Globals' and its own).

    Lambda extracts a layer to /opt and puts /opt/python on sys.path; a layer's source folder here is
    what its build copies there (see layers/relay/Makefile). Layers named by ARN are not local and
    are skipped: their packages must come from the environment.
    """
    template = shared()  # read on every invocation: no copy
    resources = template["Resources"]
    layers = [
        *template.get("Globals", {}).get("Function", {}).get("Layers", []),
        *resources[function]["Properties"].get("Layers", []),
    ]
    paths = []
    for layer in layers:
        logical = layer.get("Ref") if isinstance(layer, dict) else None
        resource = resources.get(logical, {}) if isinstance(logical, str) else {}
        content = resource.get("Properties", {}).get("ContentUri")
        if resource.get("Type") == "AWS::Serverless::LayerVersion" and isinstance(content, str):
            paths.append(ROOT / content)
    return paths


class FunctionImportError(RuntimeError):
    """The function's module failed to import (Lambda's Runtime.ImportModuleError); `__cause__` is why."""


def _import_hint(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return (
            f"\n{sys.executable} cannot import {exc.name!r}: the function's packages are in the project's venv. "
            "Run devstack with it, from the repository root: .venv/bin/python -m devstack ... "
            "(any make target creates .venv)"
        )
    return ""


def check_function(stack: LocalStack, function: str) -> dict[str, str]:
    """The function's code location and handler; UnknownFunctionError, listing the known ones, for another name."""
    if function not in stack.handlers:
        known = ", ".join(sorted(stack.handlers)) or "(none)"
        raise UnknownFunctionError(f"unknown function {function!r}; the template's functions are: {known}")
    return stack.handlers[function]


def enter_environment(stack: LocalStack, function: str) -> None:
    """This process's environment as the function's container would have it: its own variables set, and the
    variables only other functions of the template set removed (one process plays every container)."""
    own = stack.env(function)
    for name in {k for other in stack.functions if other != function for k in stack.env(other)} - own.keys():
        os.environ.pop(name, None)
    os.environ.update(own)


def _container_key(function: str, container: int) -> str:
    return function if container == 0 else f"{function}#{container}"


def load_handler(stack: LocalStack, function: str, container: int = 0) -> Callable[[Any, Any], Any]:
    """Import the function's module once per process, with its environment and layers set first, as Lambda does.

    `container` names one of several warm containers of the function (each its own import, so its own
    clients and module state): what concurrent invocations run in. Container 0 is the one `loaded_module` sees.
    """
    spec_info = check_function(stack, function)
    enter_environment(stack, function)
    module_name, _, attr = spec_info["handler"].rpartition(".")
    cache_key = _container_key(function, container)
    if cache_key not in _modules:
        for path in reversed(layer_paths(function)):
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
        path = ROOT / spec_info["code_uri"] / f"{module_name.replace('.', '/')}.py"
        spec = importlib.util.spec_from_file_location(f"relay_function_{cache_key.replace('#', '_')}", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[spec.name]  # the next invocation tries the import again, as a new container would
            raise FunctionImportError(
                f"{function} could not be imported ({shown(path)}): {type(exc).__name__}: {exc}" + _import_hint(exc)
            ) from exc
        except BaseException:
            del sys.modules[spec.name]
            raise
        _modules[cache_key] = module
    handler: Callable[[Any, Any], Any] = getattr(_modules[cache_key], attr)
    return handler


def discard_container(function: str, container: int = 0) -> None:
    """Forget a warm container (its runtime died): the next invocation in it imports the module afresh."""
    module = _modules.pop(_container_key(function, container), None)
    if module is not None:
        sys.modules.pop(module.__name__, None)


def loaded_module(function: str) -> ModuleType:
    """The function's module as this process's warm "container" holds it (its clients, its relay object).

    `load_handler` or `invoke` imports it first; tests use this to reach into the deployed objects.
    """
    try:
        return _modules[function]
    except KeyError:
        raise LookupError(f"{function} is not loaded in this process: load_handler() or invoke() it first") from None


_output_lock = threading.Lock()
_output_users = 0  # invocations running with their output sent to a log (concurrent workers share one)
_output_saved: tuple[list[tuple[logging.StreamHandler[Any], Any]], Any, Any] | None = None


@contextlib.contextmanager
def _function_output(stack: LocalStack, function: str, log: TextIO | None) -> Iterator[None]:
    """Send what the function writes (print, warnings, its Powertools logger) to `log`, as Lambda does to CloudWatch.

    sys.stdout and the logger's stream belong to the process, so concurrent invocations (see `pump`'s
    `concurrency`) share the switch: the first one in makes it, the last one out undoes it.
    """
    global _output_users, _output_saved
    if log is None:
        yield
        return
    with _output_lock:
        if _output_users == 0:
            # Powertools logs through a stdlib logger named for the service, whose handler holds the stream it
            # was created with; redirecting sys.stdout alone would not reach it.
            service = stack.env(function).get("POWERTOOLS_SERVICE_NAME")
            consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
            handlers = [
                h
                for h in (logging.getLogger(service).handlers if service else [])
                if isinstance(h, logging.StreamHandler) and h.stream in consoles
            ]
            _output_saved = ([(h, h.setStream(log)) for h in handlers], sys.stdout, sys.stderr)
            sys.stdout = sys.stderr = log
        _output_users += 1
    try:
        yield
    finally:
        with _output_lock:
            _output_users -= 1
            if _output_users == 0 and _output_saved is not None:
                saved, sys.stdout, sys.stderr = _output_saved
                for handler, stream in saved:
                    if stream is not None:
                        handler.setStream(stream)
                _output_saved = None


def invoke(
    stack: LocalStack,
    function: str,
    event: Any,
    context: LambdaContext | None = None,
    *,
    log: TextIO | None = None,
    container: int = 0,
) -> Any:
    """Run the function's handler on `event` in warm container `container` (see `load_handler`). Its output goes
    to `log` (with Lambda's START/END/REPORT lines) when given, else to this process's stdout."""
    check_function(stack, function)
    context = context or LambdaContext(function, function_timeout(function))
    if log is not None:
        log.write(f"START RequestId: {context.aws_request_id} Version: $LATEST\n")
    started = time.monotonic()
    try:
        handler = load_handler(stack, function, container)
        enter_environment(stack, function)
        with _function_output(stack, function, log):
            return handler(event, context)
    except Exception:
        if log is not None:
            log.write(traceback.format_exc())
        raise
    finally:
        if log is not None:
            elapsed = (time.monotonic() - started) * 1000
            log.write(f"END RequestId: {context.aws_request_id}\n")
            log.write(f"REPORT RequestId: {context.aws_request_id}\tDuration: {elapsed:.2f} ms\n")
            log.flush()


def open_log(path: Path, *, truncate: bool = False) -> TextIO:
    """A function's log file for `invoke` and `pump`, appended to unless `truncate` (use it in a `with`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w" if truncate else "a", encoding="utf-8")


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
    test_events: int = 0
    """Delivered messages that were S3's s3:TestEvent, not an upload."""
    uploads: list[S3Object] = field(default_factory=list)
    """The object versions named by the delivered messages, in delivery order."""
    crashes: list[str] = field(default_factory=list)
    """One line per invocation that raised instead of returning (its whole batch went back to the queue)."""


def queue_url_for(stack: LocalStack, function: str) -> tuple[str, str]:
    """The URL and ARN of the queue the function's SQS event reads."""
    queue_arn = stack.resources.get(f"{function}.queue_arn")
    if queue_arn is None:
        check_function(stack, function)
        fed = sorted(k.removesuffix(".queue_arn") for k in stack.resources if k.endswith(".queue_arn"))
        raise UnknownFunctionError(f"{function} has no SQS event; functions fed by a queue: {', '.join(fed)}")
    queue_url = next(url for k, url in stack.resources.items() if stack.resources.get(f"{k}.arn") == queue_arn)
    return queue_url, queue_arn


def pump(
    stack: LocalStack,
    function: str,
    *,
    batch_size: int = 10,
    idle_rounds: int = 2,
    max_seconds: float = 300.0,
    retry_delay: int = 0,
    max_invocations: int | None = None,
    concurrency: int = 1,
    timeout_s: float | None = None,
    log: TextIO | None = None,
    errors: TextIO | None = None,
) -> PumpReport:
    """Poll the function's queue and invoke it until the queue stays empty (bounded in time).

    - Failed records get their visibility reset to `retry_delay` seconds instead of waiting out the
      template's visibility timeout, so local retries (and the redrive to the DLQ) happen in seconds.
    - S3 notifications get the versionId AWS would send (moto leaves it out): see
      `devstack.notifications.complete_notification`.
    - `concurrency` plays the event source mapping's MaximumConcurrency: that many workers, each polling
      and invoking in a warm container of its own (see `load_handler`), at the same time.
    - `timeout_s` replaces the template's Timeout for the invocations' LambdaContext (the retry deadline,
      and how long an idempotency lock of a dead invocation lasts).
    - A crashed invocation (the handler raised) fails its whole batch, as on Lambda, and its
      exception is printed to `errors` (stderr by default): with the traceback the first time, one
      line when the same error repeats. A module that fails to import stops the pump with the batch
      still queued: retrying cannot fix it, and Lambda would only move the messages to the DLQ.
    - A runtime that dies (a BaseException that is not KeyboardInterrupt or SystemExit: the process is
      gone, nothing cleans up) loses its container, and its batch comes back once the invocation's
      timeout has passed (on AWS the visibility timeout is longer still), when the locks it held expired.
    - `log` receives the function's own output (see `invoke`).
    """
    queue_url, queue_arn = queue_url_for(stack, function)
    sqs, s3 = stack.client("sqs"), stack.client("s3")
    report = PumpReport()
    lock = threading.Lock()
    seen_errors: set[str] = set()
    bodies: dict[str, str] = {}  # message id -> completed body, so a redelivery names the same version
    deadline = time.monotonic() + max_seconds
    timeout = timeout_s if timeout_s is not None else function_timeout(function)
    stop = threading.Event()

    def requeue(messages: list[dict[str, Any]], delay: int) -> None:
        for message in messages:
            with lock:
                report.failed += 1
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=delay
            )

    def worker(container: int) -> None:
        idle = 0
        while idle < idle_rounds and time.monotonic() < deadline and not stop.is_set():
            with lock:
                if max_invocations is not None and report.invocations >= max_invocations:
                    return
                report.invocations += 1
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=batch_size,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                with lock:
                    report.invocations -= 1
                idle += 1
                continue
            idle = 0
            for message in messages:
                completed = complete_notification(s3, message["Body"])
                with lock:
                    body = bodies.setdefault(message["MessageId"], completed)
                if body != message["Body"]:
                    md5 = hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
                    message.update(Body=body, MD5OfBody=md5)
            event = {"Records": [sqs_record(m, queue_arn) for m in messages]}
            context = LambdaContext(function, timeout)
            try:
                result = invoke(stack, function, event, context, log=log, container=container)
                failed_ids = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            except FunctionImportError as exc:
                # It will not import on the next try either: stop, and leave the batch on the queue instead of
                # burning its receives on the way to the DLQ.
                with lock:
                    _report_crash(report, function, len(messages), exc, seen_errors, errors or sys.stderr)
                requeue(messages, retry_delay)
                stop.set()
                return
            except Exception as exc:  # noqa: BLE001 - a crashed invocation fails the whole batch, as on Lambda
                failed_ids = {m["MessageId"] for m in messages}
                with lock:
                    _report_crash(report, function, len(messages), exc, seen_errors, errors or sys.stderr)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - the runtime died mid-invocation
                discard_container(function, container)
                with lock:
                    report.crashes.append(f"runtime died: {type(exc).__name__}: {exc}")
                requeue(messages, math.ceil(max(context.get_remaining_time_in_millis() / 1000.0, 0)) + 1)
                continue
            for message in messages:
                if message["MessageId"] in failed_ids:
                    requeue([message], retry_delay)
                else:
                    with lock:
                        report.delivered += 1
                        report.test_events += is_test_event(message["Body"])
                        report.uploads += objects_in(message["Body"])
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    if concurrency == 1:
        worker(0)
        return report
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return report


def _report_crash(
    report: PumpReport, function: str, batch: int, exc: Exception, seen: set[str], errors: TextIO
) -> None:
    summary = f"{type(exc).__name__}: {exc}"
    report.crashes.append(summary)
    where = f"invocation {report.invocations}; its {batch} message(s) go back to the queue"
    if summary in seen:
        print(f"{function} crashed again ({where}): {summary}", file=errors)
    elif isinstance(exc, FunctionImportError) and exc.__cause__ is not None:
        seen.add(summary)
        print(f"{function} crashed ({where}): its module failed to import", file=errors)
        print("".join(traceback.format_exception(exc.__cause__)).rstrip(), file=errors)
        print(str(exc), file=errors)
    else:
        seen.add(summary)
        print(f"{function} crashed ({where}):", file=errors)
        print("".join(traceback.format_exception(exc)).rstrip(), file=errors)
    errors.flush()
