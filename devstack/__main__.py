"""The local stack's commands: python -m devstack up|down|status|upload|deliver|invoke|api|sandbox (see --help)."""

from __future__ import annotations

import sys

try:  # the packages devstack itself needs; the function's own are checked when it is imported
    import boto3  # noqa: F401
    import requests
    import yaml  # noqa: F401
except ModuleNotFoundError as missing:
    sys.exit(
        f"python -m devstack needs the project's packages ({missing}). Run it with the project's venv, "
        "from the repository root: .venv/bin/python -m devstack ... (any make target creates .venv)"
    )

import argparse
import contextlib
import json
import mimetypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
import traceback
from email.header import Header
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from devstack.gateway import LocalGateway
from devstack.invoke import UnknownFunctionError, check_function, invoke, open_log, pump, queue_url_for
from devstack.notifications import localize_event, objects_in
from devstack.stack import LOG_DIR, STATE_FILE, LocalStack, provision, shown
from devstack.template import ROOT

PROG = ".venv/bin/python -m devstack"  # how the hints say to run a command: copy-pasteable from the root
MOTO_PORT_ENV, SANDBOX_PORT_ENV = "RELAY_LOCAL_MOTO_PORT", "RELAY_LOCAL_SANDBOX_PORT"
DEFAULT_MOTO_PORT, DEFAULT_SANDBOX_PORT = 5055, 8900
DEFAULT_API_PORT = 3000  # sam local start-api's
UPLOAD_BUCKET = "UploadBucket"


# -- ports ----------------------------------------------------------------------------------------


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could not bind the port (with SO_REUSEADDR, as moto's and the sandbox's servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port_near(port: int, avoid: tuple[int, ...] = ()) -> int:
    for candidate in range(port + 1, min(port + 200, 65536)):
        if candidate not in avoid and not port_in_use(candidate):
            return candidate
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_stack_ports(moto_port: int, sandbox_port: int) -> None:
    """Refuse taken ports before starting anything, naming the port and how to choose another."""
    if moto_port == sandbox_port:
        raise SystemExit(f"moto and the sandbox cannot share port {moto_port}: choose two ports")
    for name, port, flag, variable in (
        ("moto server", moto_port, "--moto-port", MOTO_PORT_ENV),
        ("sandbox", sandbox_port, "--sandbox-port", SANDBOX_PORT_ENV),
    ):
        if port_in_use(port):
            other = free_port_near(port, avoid=(moto_port, sandbox_port))
            raise SystemExit(
                f"port {port} (for the {name}) is already in use on 127.0.0.1.\n"
                f"Choose another port: `make stack-up {variable}={other}`, or `{PROG} up {flag} {other}` "
                f"(the {variable} environment variable sets it too). Port {other} is free right now."
            )


# -- up, down, status -----------------------------------------------------------------------------


def spawn(name: str, args: list[str]) -> subprocess.Popen[bytes]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )


def wait_for(name: str, url: str, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    """Until the child answers at `url`; an exited child fails at once (something else may answer there)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the {name} exited with code {process.returncode} (see {shown(LOG_DIR / name)}.log)")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {seconds:.0f}s (see {shown(LOG_DIR)})")


def up(moto_port: int, sandbox_port: int, state: Path = STATE_FILE) -> LocalStack:
    if state.exists():
        down(state)
    check_stack_ports(moto_port, sandbox_port)
    moto_url, sandbox_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sandbox_port}"
    moto = spawn("moto", ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)])
    sandbox = spawn(
        "sandbox", ["-m", "sandbox", "--port", str(sandbox_port), "--data-dir", str(LOG_DIR / "sandbox-data")]
    )
    pids = {"moto": moto.pid, "sandbox": sandbox.pid}
    LocalStack(moto_url, sandbox_url, pids=pids).save(state)  # so `down` can stop them if provisioning fails
    wait_for("moto", f"{moto_url}/moto-api/", moto)
    wait_for("sandbox", f"{sandbox_url}/__sandbox/health", sandbox)
    stack = provision(moto_url, sandbox_url)
    stack.pids = pids
    stack.save(state)
    return stack


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(state: Path = STATE_FILE) -> None:
    """Stop the stack's processes and wait until they are gone, so their ports are free again."""
    if not state.exists():
        return
    stack = LocalStack.read(state)
    for pid in stack.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in stack.pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in stack.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    state.unlink()


def status(state: Path = STATE_FILE) -> int:
    stack = LocalStack.read(state)
    ok = True
    for name, url in (("moto", f"{stack.moto_url}/moto-api/"), ("sandbox", f"{stack.sandbox_url}/__sandbox/health")):
        try:
            requests.get(url, timeout=2).raise_for_status()
            print(f"{name:8} up    {url}")
        except requests.RequestException as exc:
            ok = False
            print(f"{name:8} DOWN  {url} ({type(exc).__name__})")
    if not ok:
        print(f"start it again with `make stack-up` (logs in {shown(LOG_DIR)})")
        return 1
    s3 = stack.client("s3")
    print("buckets :", ", ".join(b["Name"] for b in s3.list_buckets()["Buckets"]))
    print("queues  :", ", ".join(stack.client("sqs").list_queues().get("QueueUrls", [])))
    print("tables  :", ", ".join(stack.client("dynamodb").list_tables()["TableNames"]))
    print("secrets :", ", ".join(s["Name"] for s in stack.client("secretsmanager").list_secrets()["SecretList"]))
    return 0


# -- upload, deliver, invoke ----------------------------------------------------------------------


def _rfc2047(text: str) -> str:
    """S3 user metadata is ASCII on the wire: other text goes RFC 2047-encoded, as the SDKs send it."""
    return text if text.isascii() else Header(text, "utf-8").encode()


def _notification_filters(s3: Any, bucket: str) -> list[tuple[str, str]]:
    """The (prefix, suffix) of each of the bucket's queue notifications."""
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    filters = []
    for queue in config.get("QueueConfigurations", []):
        rules = {r["Name"].lower(): r["Value"] for r in queue.get("Filter", {}).get("Key", {}).get("FilterRules", [])}
        filters.append((rules.get("prefix", ""), rules.get("suffix", "")))
    return filters


def upload(
    stack: LocalStack,
    file: Path,
    key: str,
    *,
    caption: str | None = None,
    binding: str | None = None,
    create_parent: bool = False,
) -> dict[str, Any]:
    """Put a local file into the upload bucket, as a field app would; S3 queues the notification."""
    if key.endswith("/"):
        key += file.name
    bucket = stack.resources[UPLOAD_BUCKET]
    s3 = stack.client("s3")
    kind, _, rest = key.partition("/")
    parent = rest.partition("/")[0]
    parent_note = None
    if kind in ("issues", "forms") and parent:
        admin = f"{stack.sandbox_url}/__sandbox"
        if create_parent:
            requests.post(f"{admin}/itwin/{kind}", json={"id": parent}, timeout=10).raise_for_status()
        elif parent not in requests.get(f"{admin}/inspect", timeout=10).json()["itwin"][kind]:
            parent_note = (
                f"{kind}/{parent} does not exist in the sandbox, so the relay will record failed "
                f"({'IssueNotFound' if kind == 'issues' else 'FormDataNotFound'}); "
                "upload again with --create-parent to create it"
            )
    metadata = {name: _rfc2047(value) for name, value in (("caption", caption), ("binding", binding)) if value}
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    filters = _notification_filters(s3, bucket)
    with file.open("rb") as body:  # streamed, not read into memory
        put = s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata, ContentType=content_type)
    return {
        "bucket": bucket,
        "key": key,
        "size": file.stat().st_size,
        "content_type": content_type,
        "version_id": put.get("VersionId"),
        "etag": str(put.get("ETag", "")).strip('"'),
        "notified": any(key.startswith(p) and key.endswith(s) for p, s in filters),
        "notifying_prefixes": sorted({p for p, _ in filters}),
        "parent_note": parent_note,
    }


def default_functions(stack: LocalStack) -> list[str]:
    """The functions fed by the queues that the upload bucket notifies (S3 → iTwin, S3 → RFI), or the one fed."""
    fed = sorted(k.removesuffix(".queue_arn") for k in stack.resources if k.endswith(".queue_arn"))
    notified = {arn for k, v in stack.resources.items() if k.endswith(".notifies") for arn in v.split(",")}
    uploads = [f for f in fed if stack.resources[f"{f}.queue_arn"] in notified]
    if uploads:
        return uploads
    if len(fed) != 1:
        raise SystemExit(f"name the function to deliver to: {', '.join(fed) or '(no function reads a queue)'}")
    return fed


def _outcome(s3: Any, bucket: str, key: str, version_id: str | None) -> str:
    args = {"VersionId": version_id} if version_id else {}
    try:
        tag_set = s3.get_object_tagging(Bucket=bucket, Key=key, **args)["TagSet"]
    except Exception as exc:  # noqa: BLE001 - shown, not handled: the object may be gone
        return f"- ({type(exc).__name__})"
    tags = {t["Key"]: t["Value"] for t in tag_set}
    status: str = tags.get("relay-status", "")
    if not status:
        return "- (no relay tags: see the log)"
    details = [str(tags[k]) for k in ("relay-attachment-id", "relay-error") if k in tags]
    return status + (f" ({', '.join(details)})" if details else "")


def _dead_letters(stack: LocalStack, queue_url: str) -> tuple[str, int] | None:
    sqs = stack.client("sqs")
    redrive = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    if "RedrivePolicy" not in redrive:
        return None
    arn = json.loads(redrive["RedrivePolicy"])["deadLetterTargetArn"]
    logical = next((k.removesuffix(".arn") for k, v in stack.resources.items() if v == arn), None)
    if logical is None:
        return None
    attrs = sqs.get_queue_attributes(QueueUrl=stack.resources[logical], AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"
    ]
    return logical, int(attrs["ApproximateNumberOfMessages"])


def deliver(stack: LocalStack, function: str, log_file: Path, max_seconds: float) -> int:
    """Drain the function's queue into it, as the event source mapping would, and show each upload's outcome."""
    queue_url, _ = queue_url_for(stack, function)
    with open_log(log_file) as log:
        report = pump(stack, function, log=log, max_seconds=max_seconds)
    print(
        f"{report.invocations} invocation(s) of {function}: {report.delivered} message(s) delivered, "
        f"{report.failed} returned to the queue"
    )
    if report.test_events:
        print(f"{report.test_events} of them: S3's s3:TestEvent (sent when notifications are configured; skipped)")
    if report.crashes:
        print(f"{len(report.crashes)} invocation(s) crashed: the error is shown above")
    s3 = stack.client("s3")
    if report.uploads:
        width = min(60, max(len(u.key) for u in report.uploads))
        print(f"\n{'key':{width}} {'version':36} outcome")
        for obj in report.uploads:
            print(f"{obj.key:{width}} {obj.version_id or '-':36} {_outcome(s3, obj.bucket, obj.key, obj.version_id)}")
    dead = _dead_letters(stack, queue_url)
    if dead and dead[1]:
        print(f"\n{dead[0]} holds {dead[1]} message(s): uploads that failed every delivery")
    print(f"\nfunction logs: {shown(log_file)}")
    return 1 if report.crashes else 0


def invoke_file(stack: LocalStack, function: str, event_file: Path, log_file: Path, as_is: bool) -> int:
    """Invoke with an event file, like `sam local invoke -e`; S3 records get the local object's version."""
    check_function(stack, function)
    event = json.loads(event_file.read_text(encoding="utf-8"))
    if not as_is:
        event, notes = localize_event(stack.client("s3"), event)
        for note in notes:
            print(note, file=sys.stderr)
    with open_log(log_file) as log:
        try:
            result = invoke(stack, function, event, log=log)
        except UnknownFunctionError:
            raise
        except Exception as exc:  # noqa: BLE001 - shown to the user, as sam local invoke shows it
            print("".join(traceback.format_exception(exc)).rstrip(), file=sys.stderr)
            print(f"function logs: {shown(log_file)}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2, default=str))
    s3 = stack.client("s3")
    for sqs_record in event.get("Records", []) if isinstance(event, dict) else []:
        for obj in objects_in(sqs_record.get("body", "")) if isinstance(sqs_record, dict) else []:
            outcome = _outcome(s3, obj.bucket, obj.key, obj.version_id)
            print(f"{obj.key} ({obj.version_id or 'no version'}): {outcome}", file=sys.stderr)
    print(f"function logs: {shown(log_file)}", file=sys.stderr)
    return 0


# -- the API ---------------------------------------------------------------------------------------


def _example_path(resource: str) -> str:
    return re.sub(r"\{[^}]+\}", "example", resource)


def serve_api(stack: LocalStack, port: int, state: Path = STATE_FILE) -> int:
    """Serve the template's API routes in the foreground until Ctrl-C, with the url in the state file meanwhile."""
    if port_in_use(port):
        raise SystemExit(f"port {port} is already in use on 127.0.0.1: `{PROG} api --port {free_port_near(port)}`")
    gateway = LocalGateway.for_stack(stack, log=sys.stdout, port=port)
    with gateway:
        stack.api_url = gateway.url
        stack.save(state)
        print(f"API {gateway.api} (stage {gateway.stage}) on {gateway.url}, SigV4 checked on AWS_IAM routes")
        for route in gateway.routes:
            print(f"  {route.method:7} {route.resource}  ->  {route.function} ({route.auth})")
        if not gateway.routes:
            print("  (the template has no `Type: Api` events yet: every path answers 403)")
        signed = next((r for r in gateway.routes if r.auth == "AWS_IAM"), None)
        example = f"{gateway.url}{_example_path(signed.resource) if signed else '/...'}"
        method = signed.method if signed and signed.method != "ANY" else "GET"
        print(
            "\ncall it, signed with the local stack's key (access key testing, secret testing):\n"
            f"  awscurl --service execute-api --access_key testing --secret_key testing --region us-east-1 "
            f"-X {method} {example}\n"
            f'  {PROG.removesuffix(" -m devstack")} -c "import requests; from devstack.sigv4 import SigV4; '
            f"print(requests.request('{method}', '{example}', auth=SigV4()).text)\"\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nAPI stopped")
        finally:
            if state.exists():  # `down` may have removed it meanwhile
                current = LocalStack.read(state)
                current.api_url = ""
                current.save(state)
    return 0


# -- the sandbox alone ----------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2).raise_for_status()
    except requests.RequestException:
        return False
    return True


def check_sandbox_port(port: int, state: Path = STATE_FILE) -> None:
    """Refuse to start a second sandbox where the local stack's (or anything else) already listens."""
    if state.exists():
        stack = LocalStack.read(state)
        if urlparse(stack.sandbox_url).port == port and _answers(f"{stack.sandbox_url}/__sandbox/health"):
            raise SystemExit(
                f"the local stack (`make stack-up`) is running, and its sandbox already listens on "
                f"{stack.sandbox_url}.\nUse that one as it is (`make stack-status`), stop the stack first "
                f"(`make stack-down`), or run a second sandbox on another port: "
                f"`make sandbox SANDBOX_PORT={free_port_near(port)}`"
            )
    if port_in_use(port):
        raise SystemExit(
            f"port {port} is already in use on 127.0.0.1 (not by the local stack).\n"
            f"Run the sandbox on another port: `make sandbox SANDBOX_PORT={free_port_near(port)}`"
        )


def run_sandbox(port: int, extra: list[str], state: Path = STATE_FILE) -> None:
    check_sandbox_port(port, state)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    os.execve(sys.executable, [sys.executable, "-m", "sandbox", "--port", str(port), *extra], env)  # noqa: S606


# -- command line ---------------------------------------------------------------------------------


def _env_port(variable: str, default: int) -> int:
    value = os.environ.get(variable, "")
    if not value:
        return default
    if not value.isdigit():
        raise SystemExit(f"{variable}={value!r} is not a port number")
    return int(value)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m devstack",
        description="The local stack (moto server + platform sandbox, provisioned from template.yaml) and its tools.",
        epilog=f"Run from the repository root as `{PROG} COMMAND`; the make targets wrap up, down and status.",
    )
    root.add_argument(
        "--state", type=Path, default=STATE_FILE, help=f"the running stack's state file (default {shown(STATE_FILE)})"
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = sub.add_parser("up", help="start moto server and the sandbox, create the template's resources")
    start.add_argument(
        "--moto-port",
        type=int,
        default=None,
        help=f"moto server's port (default ${MOTO_PORT_ENV}, else {DEFAULT_MOTO_PORT})",
    )
    start.add_argument(
        "--sandbox-port",
        type=int,
        default=None,
        help=f"the sandbox's port (default ${SANDBOX_PORT_ENV}, else {DEFAULT_SANDBOX_PORT})",
    )
    sub.add_parser("down", help="stop the local stack")
    sub.add_parser("status", help="show what runs and what exists")

    put = sub.add_parser("upload", help="put a local file into the upload bucket (S3 queues its notification)")
    put.add_argument("file", type=Path, help="the local file")
    put.add_argument(
        "key", help="object key, e.g. issues/ISSUE-1001/photo.jpg; a key ending in / gets the file's name appended"
    )
    put.add_argument("--caption", help="the attachment's caption (user metadata `caption`)")
    put.add_argument("--binding", help="the attachment's binding (user metadata `binding`)")
    put.add_argument("--create-parent", action="store_true", help="create the key's issue or form in the sandbox")

    drain = sub.add_parser("deliver", help="deliver the queued notifications to the function, as Lambda's SQS trigger")
    drain.add_argument(
        "function", nargs="?", help="logical id in template.yaml (default: the one the bucket's notifications feed)"
    )
    drain.add_argument("--max-seconds", type=float, default=300.0, help="stop after this long (default 300)")
    drain.add_argument("--log-file", type=Path, help="where the function's logs go (default .local/<function>.log)")

    run = sub.add_parser("invoke", help="invoke a function with an event file (Docker-free `sam local invoke`)")
    run.add_argument("function", help="logical id in template.yaml, e.g. S3ToItwinFunction")
    run.add_argument("event", type=Path, help="event file, e.g. events/s3-put-issue-photo.json")
    run.add_argument("--log-file", type=Path, help="where the function's logs go (default .local/<function>.log)")
    run.add_argument(
        "--as-is",
        action="store_true",
        help="do not replace the event's S3 versionIds with the local object's version (see README)",
    )

    api = sub.add_parser(
        "api",
        help="serve the template's API routes over HTTP with SigV4 checked, like `sam local start-api` (Ctrl-C stops)",
    )
    api.add_argument("--port", type=int, default=DEFAULT_API_PORT, help=f"default {DEFAULT_API_PORT}")

    alone = sub.add_parser(
        "sandbox",
        help="run the platform sandbox alone (refuses a port the stack already uses); other options go to it",
    )
    alone.add_argument("--port", type=int, default=DEFAULT_SANDBOX_PORT, help=f"default {DEFAULT_SANDBOX_PORT}")
    return root


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args, extra = cli.parse_known_args(argv)
    if extra and args.command != "sandbox":
        cli.error(f"unrecognized arguments: {' '.join(extra)}")
    state: Path = args.state
    if args.command == "up":
        moto_port = args.moto_port or _env_port(MOTO_PORT_ENV, DEFAULT_MOTO_PORT)
        sandbox_port = args.sandbox_port or _env_port(SANDBOX_PORT_ENV, DEFAULT_SANDBOX_PORT)
        stack = up(moto_port, sandbox_port, state)
        print(f"local stack up: moto {stack.moto_url}, sandbox {stack.sandbox_url}")
        return status(state)
    if args.command == "down":
        down(state)
        print("local stack down")
        return 0
    if args.command == "status":
        return status(state)
    if args.command == "sandbox":
        run_sandbox(args.port, [a for a in extra if a != "--"], state)
        return 0  # not reached: the sandbox replaced this process
    stack = LocalStack.read(state)
    if args.command == "api":
        return serve_api(stack, args.port, state)
    try:
        if args.command == "upload":
            if not args.file.is_file():
                raise SystemExit(f"{args.file}: no such file")
            done = upload(
                stack, args.file, args.key, caption=args.caption, binding=args.binding, create_parent=args.create_parent
            )
            print(
                f"uploaded {args.file} ({done['size']} bytes, {done['content_type']}) "
                f"to s3://{done['bucket']}/{done['key']}\nversion {done['version_id']}, eTag {done['etag']}"
            )
            if done["parent_note"]:
                print(done["parent_note"])
            if done["notified"]:
                print(f"S3 queued a notification: deliver it with `{PROG} deliver`")
            else:
                prefixes = ", ".join(done["notifying_prefixes"]) or "(none)"
                print(f"no notification: the bucket notifies only for keys under {prefixes}")
            return 0
        if args.command == "deliver":
            functions = [args.function] if args.function else default_functions(stack)
            codes = [deliver(stack, f, args.log_file or LOG_DIR / f"{f}.log", args.max_seconds) for f in functions]
            return max(codes)
        function = args.function
        return invoke_file(stack, function, args.event, args.log_file or LOG_DIR / f"{function}.log", args.as_is)
    except UnknownFunctionError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
