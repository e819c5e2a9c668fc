"""Issue 11 target: each function's cold start, as a ratio to a bare handler that builds the same boto3 clients.

A cold start is one fresh interpreter (bench/cold_child.py) timing the import of the function's handler module
plus its first invocation, with a realistic event from events/ that does the function's real first work against
moto server and the sandbox (a fresh upload relayed, a listing, a signed webhook, an archive copy, the token
check). The bare handler, in its own fresh interpreter, imports boto3, builds the same clients (found in the
function's process after its run) and answers at once. The two alternate, `--rounds` times, beside every other
function's, and the table shows medians.

- cold: import + first invocation, ms.
- warm: a second invocation in the same process, on another event of the same kind; its work (the calls to
  moto and the sandbox) is in the first invocation too, and is not start-up.
- ratio: (cold - warm) ÷ (bare cold - bare warm), the median over rounds: what a cold start adds, against
  what the bare handler's adds. Target: at most 1.3 for every function. raw: cold ÷ bare cold, the same with
  the first invocation's calls left in. cpu: the ratio in the child's own CPU time, which a loaded machine
  disturbs far less than wall time.

Both sides import from bytecode (a cache the warm-up runs write), as Lambda imports the layer built with it.
moto server and the sandbox run as separate processes, started here. Tracing is off, as locally (the bench
environment sets POWERTOOLS_TRACE_DISABLED, as the other benches do).
`--tracing` measures with tracing on, as Lambda runs the template's functions (Tracing: Active): Powertools'
Tracer then imports the X-Ray SDK and patches botocore and requests, which the bare handler does not need.
Usage: python bench/cold_start.py [--rounds 7] [--function S3ToItwinFunction ...] [--importtime] [--tracing]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from bench.common import ROOT, local_env, start_servers

TARGET = 1.3
EVENTS = ROOT / "events"
Event = dict[str, Any]


@dataclass
class Case:
    """One function: how to make a fresh event for it, and how to tell that its answer is a success."""

    function: str
    make: Callable[[], Event]
    check: Callable[[Any], str | None]
    samples: dict[str, list[float]] = field(default_factory=dict)
    clients: list[str] = field(default_factory=list)


def sample(name: str) -> Event:
    event: Event = json.loads((EVENTS / name).read_text())
    return event


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--function", nargs="+", help="only these functions (default: every one in template.yaml)")
    parser.add_argument(
        "--importtime", action="store_true", help="also print what each import adds to the bare one's, by package"
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="tracing on, as on Lambda with Tracing: Active (a trace header, X-Ray's daemon address unanswered)",
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="take functions/ and the layer from this checkout (before/after)"
    )
    args = parser.parse_args()
    local_env()
    moto_url, sandbox_url, procs = start_servers()
    try:
        return run(args, moto_url, sandbox_url)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def run(args: argparse.Namespace, moto_url: str, sandbox_url: str) -> int:
    from devstack.invoke import function_timeout
    from devstack.stack import provision

    stack = provision(moto_url, sandbox_url)
    cases = {c.function: c for c in build_cases(stack)}
    missing = set(stack.handlers) - cases.keys()
    if missing:
        raise SystemExit(f"no cold-start case for {sorted(missing)}: add one to bench/cold_start.py")
    chosen = [cases[f] for f in (args.function or sorted(cases))]
    workdir = Path(tempfile.mkdtemp(prefix="cold-start-"))

    def child(case: Case, mode: str, *extra: str) -> dict[str, Any]:
        spec = {
            "mode": mode,
            "function": case.function,
            "code_dir": str(args.root / stack.handlers[case.function]["code_uri"]),
            "handler": stack.handlers[case.function]["handler"],
            "timeout": function_timeout(case.function),
            "events": [case.make(), case.make()],
            "services": case.clients,
        }
        spec_path, result_path = workdir / "spec.json", workdir / "result.json"
        spec_path.write_text(json.dumps(spec))
        result_path.unlink(missing_ok=True)
        env = environment(stack, case.function, args.root)
        # Bytecode for every module, relay's included, as the layer ships it (layers/relay/Makefile), even where
        # PYTHONDONTWRITEBYTECODE is set: the warm-up runs below write it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        if args.tracing:
            env = traced(env, str(args.root / stack.handlers[case.function]["code_uri"]))
        done = subprocess.run(
            [sys.executable, *extra, "-P", str(ROOT / "bench" / "cold_child.py"), str(spec_path), str(result_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not result_path.exists():
            raise SystemExit(f"{case.function} ({mode}) failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        result["stderr"] = done.stderr
        if mode == "function":
            for answer in result["answers"]:
                problem = case.check(answer)
                if problem:
                    raise SystemExit(f"{case.function}: the invocation did not succeed: {problem}")
        return result

    # A first run of each: the clients its process holds (the bare handler builds the same), bytecode written,
    # and a warm disk cache.
    for case in chosen:
        case.clients = child(case, "function")["clients"]
        child(case, "bare")
    for n in range(args.rounds):
        for case in chosen:
            order = ("function", "bare") if n % 2 == 0 else ("bare", "function")
            for mode in order:
                result = child(case, mode)
                for key in ("import_ms", "first_ms", "warm_ms", "cpu_cold_ms", "cpu_warm_ms"):
                    case.samples.setdefault(f"{mode}.{key}", []).append(result[key])
                if mode == "function" and result["xray"]:
                    case.samples.setdefault("xray", []).append(1.0)
        print(f"round {n + 1}/{args.rounds} done", flush=True)
    if args.importtime:
        for case in chosen:
            function = child(case, "function", "-X", "importtime")["stderr"]
            print_importtime(case, function, child(case, "bare", "-X", "importtime")["stderr"])
    return report(chosen, args.rounds, args.tracing)


def environment(stack: Any, function: str, root: Path = ROOT) -> dict[str, str]:
    """The function's container environment: the bench's quiet Powertools settings, its own variables, and the
    layer on PYTHONPATH (Lambda's /opt/python); the variables only other functions set are left out."""
    others = {k for other in stack.functions if other != function for k in stack.env(other)}
    env = {k: v for k, v in os.environ.items() if k not in others}
    own: dict[str, str] = stack.env(function)
    return env | own | {"PYTHONPATH": str(root / "layers" / "relay")}


def traced(env: dict[str, str], code_dir: str) -> dict[str, str]:
    """What Lambda sets for a function with active tracing: Powertools then keeps its Tracer on."""
    env = {k: v for k, v in env.items() if k != "POWERTOOLS_TRACE_DISABLED"}
    return env | {
        "LAMBDA_TASK_ROOT": code_dir,
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }


def build_cases(stack: Any) -> list[Case]:
    """Fresh events for each function, made in this process against the local stack."""
    import boto3

    from relay import constants as c
    from relay.auth.secrets import SecretStore
    from relay.auth.tokens import refresh_secret
    from relay.flows.itwin_webhooks import sign
    from relay.settings import Settings
    from relay.vendors.factory import itwin_client, token_endpoint
    from sandbox.seed import DEMO_PROJECT, DEMO_RFI, WEBHOOK_SECRET

    s3 = stack.client("s3")
    bucket = stack.resources["UploadBucket"]
    photo = (EVENTS / "objects" / "photo.jpg").read_bytes()
    report_pdf = (EVENTS / "objects" / "report.pdf").read_bytes()
    rfi_env = stack.env("S3ToRfiFunction")
    rfi_settings = Settings.load(rfi_env)
    # The APS secret holds only a refresh token until a first refresh (the refresher's job) gives it an access token.
    os.environ.update(rfi_env)
    store = SecretStore(rfi_settings.aps_secret_id, default_token_url="x", default_scope="y")
    secrets = boto3.client("secretsmanager")
    refresh_secret(store, secrets, token_endpoint(rfi_settings, c.DEFAULT_APS_TOKEN_URL), grant="refresh_token")
    itwin = itwin_client(Settings.load(stack.env("ArchiveFunction")))

    def upload_event(sample_name: str, function: str, key: str) -> Event:
        put = s3.put_object(Bucket=bucket, Key=key, Body=photo)
        event = sample(sample_name)
        record = event["Records"][0]
        body = json.loads(record["body"])
        obj = body["Records"][0]["s3"]["object"]
        obj.update(key=quote_plus(key), size=len(photo), eTag=put["ETag"].strip('"'), versionId=put["VersionId"])
        body["Records"][0]["s3"]["bucket"]["name"] = bucket
        record.update(
            body=json.dumps(body), messageId=str(uuid.uuid4()), eventSourceARN=stack.resources[f"{function}.queue_arn"]
        )
        return event

    def attachment() -> str:
        created = itwin.create_attachment("forms", "FORM-2001", f"cold {uuid.uuid4().hex[:8]}.pdf", None, None)
        itwin.upload(created.location, lambda: report_pdf, len(report_pdf))
        assert created.attachment_id
        return created.attachment_id

    def archive_event() -> Event:
        text = json.dumps(sample("sqs-archive-form-attachment.json")).replace("ATTACHMENT-ID", attachment())
        event: Event = json.loads(text)
        record = event["Records"][0]
        body = json.loads(record["body"])
        body["attachment"]["size"] = len(report_pdf)
        record.update(body=json.dumps(body), messageId=str(uuid.uuid4()))
        return event

    def webhook_event() -> Event:
        event = sample("api-itwin-webhook-attached.json")
        text = event["body"].replace("ATTACHMENT-ID", attachment()).replace("MESSAGE-ID", str(uuid.uuid4()))
        signature = sign(WEBHOOK_SECRET, text.encode())
        event["body"] = text
        event["headers"]["Signature"] = signature
        event["multiValueHeaders"]["Signature"] = [signature]
        return copy.deepcopy(event)

    def batch_ok(answer: Any) -> str | None:
        return None if answer == {"batchItemFailures": []} else f"answered {answer}"

    def status(expected: int) -> Callable[[Any], str | None]:
        def check(answer: Any) -> str | None:
            code = answer.get("statusCode") if isinstance(answer, dict) else None
            return None if code == expected else f"status {code}, expected {expected}: {str(answer)[:300]}"

        return check

    def refreshed(answer: Any) -> str | None:
        return None if isinstance(answer, dict) and "status" in answer else f"answered {answer}"

    def new(prefix: str) -> str:
        return f"{prefix}/cold start {uuid.uuid4().hex[:8]} – Müller.jpg"

    list_issue = sample("api-list-issue-attachments.json")
    return [
        Case(
            "S3ToItwinFunction",
            lambda: upload_event("s3-put-issue-photo.json", "S3ToItwinFunction", new("issues/ISSUE-1001")),
            batch_ok,
        ),
        Case(
            "S3ToRfiFunction",
            lambda: upload_event("s3-put-rfi-photo.json", "S3ToRfiFunction", new(f"rfis/{DEMO_PROJECT}/{DEMO_RFI}")),
            batch_ok,
        ),
        Case("ArchiveFunction", archive_event, batch_ok),
        Case("AttachmentsApiFunction", lambda: copy.deepcopy(list_issue), status(200)),
        Case("ItwinWebhooksFunction", webhook_event, status(202)),
        Case("ApsTokenRefresherFunction", lambda: sample("schedule-aps-token-refresh.json"), refreshed),
    ]


def self_times(stderr: str) -> dict[str, float]:
    """Each module's own import time (ms) from -X importtime's lines."""
    times = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            own, _, name = line.removeprefix("import time:").split("|")
            if own.strip().isdigit():
                times[name.strip()] = int(own) / 1000
    return times


def group(module: str) -> str:
    """Powertools by utility (aws_lambda_powertools.utilities.batch), everything else by top-level package."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[0] == "aws_lambda_powertools" and len(parts) > 2 else parts[:1])


def print_importtime(case: Case, function: str, bare: str) -> None:
    """What the function's import adds to the bare handler's: the own time of the modules only it imports, by
    package. The handler module's own body (the wiring, its clients built) is not among -X importtime's lines
    (importlib.import_module is not reported), nor are the bare handler's clients."""
    theirs, base = self_times(function), self_times(bare)
    extra: dict[str, float] = {}
    for module, ms in theirs.items():
        if module not in base:
            extra[group(module)] = extra.get(group(module), 0.0) + ms
    rows = sorted(extra.items(), key=lambda kv: -kv[1])
    print(f"\n{case.function}: imported beyond the bare handler, own time by package (-X importtime, ms)")
    print(f"  {sum(extra.values()):7.1f}  in all, of which:")
    for name, ms in rows[:12]:
        print(f"  {ms:7.1f}  {name}")


def totals(case: Case, mode: str) -> list[float]:
    """Import + first invocation, round by round."""
    return [i + f for i, f in zip(case.samples[f"{mode}.import_ms"], case.samples[f"{mode}.first_ms"], strict=True)]


def paired(case: Case, cold: str, warm: str) -> float:
    """The median over rounds of (cold - warm) ÷ (bare cold - bare warm), each round's pair measured side by side."""

    def added(mode: str) -> list[float]:
        colds = totals(case, mode) if cold == "total" else case.samples[f"{mode}.{cold}"]
        return [c - w for c, w in zip(colds, case.samples[f"{mode}.{warm}"], strict=True)]

    return statistics.median(f / b for f, b in zip(added("function"), added("bare"), strict=True))


def report(cases: list[Case], rounds: int, tracing: bool) -> int:
    def med(case: Case, key: str) -> float:
        return statistics.median(case.samples[key])

    tracing_is = "on (as on Lambda with Tracing: Active)" if tracing else "off"
    print(f"\ncold start, tracing {tracing_is}, median of {rounds} alternating rounds (ms); target: ratio <= {TARGET}")
    print("ratio and cpu: the median of each round's (cold - warm) ÷ the bare handler's, in wall and in CPU time")
    header = (
        f"{'function':27} {'import':>7} {'first':>7} {'cold':>7} {'warm':>7} {'bare':>7} "
        f"{'ratio':>6} {'raw':>6} {'cpu':>6}"
    )
    print(header)
    print("-" * len(header))
    failed = []
    for case in cases:
        cold, bare = statistics.median(totals(case, "function")), statistics.median(totals(case, "bare"))
        ratio = paired(case, "total", "warm_ms")
        raw = statistics.median(f / b for f, b in zip(totals(case, "function"), totals(case, "bare"), strict=True))
        cpu = paired(case, "cpu_cold_ms", "cpu_warm_ms")
        print(
            f"{case.function:27} {med(case, 'function.import_ms'):7.0f} {med(case, 'function.first_ms'):7.0f} "
            f"{cold:7.0f} {med(case, 'function.warm_ms'):7.0f} {bare:7.0f} {ratio:6.2f} {raw:6.2f} {cpu:6.2f}"
            + ("" if ratio <= TARGET else "  (missed)")
        )
        if ratio > TARGET:
            failed.append(case.function)
    print("\nclients built (the bare handler builds the same):")
    for case in cases:
        xray = " (the X-Ray SDK was imported)" if case.samples.get("xray") else ""
        print(f"  {case.function:27} {', '.join(case.clients)}{xray}")
    if failed:
        # A measurement, not a test: a missed target is printed (and in the README), never a failed `make bench`.
        print(f"\nmissed the {TARGET} target: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
