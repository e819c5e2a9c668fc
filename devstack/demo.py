"""`make demo`: uploads to the local bucket become iTwin attachments, then the attachments API lists, hands out
and archives a form's files through the signed local gateway, a signed iTwin webhook archives a file attached
in iTwin while a forged one is refused, and an APS user signs in and the refresher keeps the pair fresh; every
outcome is checked."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from email.header import Header
from pathlib import Path
from typing import Any, TextIO

try:  # the packages the demo itself needs; the function's own are checked when it is imported
    import requests
    from moto.server import ThreadedMotoServer
except ModuleNotFoundError as missing:
    sys.exit(
        f"the demo needs the project's packages ({missing}). Run it with `make demo`, or with the project's "
        "venv from the repository root: .venv/bin/python -m devstack.demo"
    )

from devstack.gateway import LocalGateway
from devstack.invoke import PumpReport, open_log, pump
from devstack.sigv4 import SigV4
from devstack.stack import LOG_DIR, LocalStack, provision, shown
from sandbox import Sandbox
from sandbox.seed import WEBHOOK_SECRET

FUNCTION = "S3ToItwinFunction"
ARCHIVE_FUNCTION = "ArchiveFunction"
TOKENS_FUNCTION = "ApsTokenRefresherFunction"
RFI_FUNCTION = "S3ToRfiFunction"
LOG_FILE = LOG_DIR / "demo.log"
WEBHOOK_ROUTE = "/webhooks/itwin"


@dataclass(frozen=True)
class Sample:
    key: str
    data: bytes
    caption: str | None
    expected_status: str
    expected_error: str | None = None


def samples() -> list[Sample]:
    photo = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    return [
        Sample("issues/ISSUE-1001/site-photo-001.jpg", photo, "North abutment", "attached"),
        Sample("issues/ISSUE-ÜNICODE-7/Riss in der Wand – Müller (2).png", photo[::-1], "Café – crack", "attached"),
        Sample("forms/FORM-2001/Inspection report.pdf", b"%PDF-1.4 demo report\n" * 300, None, "attached"),
        Sample("forms/FORM-2001/site-walk.jpg", photo[::2] * 3, "Site walk, level 2", "attached"),
        Sample(
            "issues/ISSUE-1002/drone-survey.tif", b"\0" * (30 * 1024 * 1024 + 1), None, "rejected", "RequestTooLarge"
        ),
        Sample("issues/ISSUE-9999/missing-issue.jpg", photo, None, "failed", "IssueNotFound"),
    ]


def run(stack: LocalStack, log: TextIO) -> int:
    s3 = stack.client("s3")
    bucket = stack.resources["UploadBucket"]
    items = samples()
    print(f"uploading {len(items)} files to s3://{bucket} on moto ({stack.moto_url})")
    for sample in items:
        metadata = {"caption": _rfc2047(sample.caption)} if sample.caption else {}
        s3.put_object(Bucket=bucket, Key=sample.key, Body=sample.data, Metadata=metadata)
    print("delivering the S3 notifications through the queue to", FUNCTION)
    report = pump(stack, FUNCTION, log=log)
    print(f"{report.invocations} invocation(s): {report.delivered} message(s) delivered, {report.failed} returned")
    print(f"  = {_messages_explained(report, len(items))}\n")
    state = requests.get(f"{stack.sandbox_url}/__sandbox/inspect", timeout=10).json()["itwin"]
    header = f"{'key':52} {'target':22} {'attachment id':14} {'bytes':>9} {'sha256':7} status"
    print(header)
    print("-" * len(header))
    problems = 0
    for sample in items:
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=sample.key)["TagSet"]}
        kind, parent, _name = sample.key.split("/")
        attachment_id = tags.get("relay-attachment-id")
        found = next((a for a in state[kind].get(parent, []) if a["id"] == attachment_id), None)
        digest_ok = found is not None and found["sha256"] == hashlib.sha256(sample.data).hexdigest()
        status = tags.get("relay-status", "-")
        error = tags.get("relay-error")
        ok = status == sample.expected_status and error == sample.expected_error
        ok = ok and (digest_ok if sample.expected_status == "attached" else found is None)
        problems += not ok
        outcome = f"{status}" + (f" ({error})" if error else "")
        print(
            f"{sample.key[:52]:52} {kind + '/' + parent:22} {(attachment_id or '-')[:12]:14} "
            f"{len(sample.data):>9} {('match' if digest_ok else '-'):7} {outcome}{'' if ok else '   <-- UNEXPECTED'}"
        )
    orphans = [a for kind in ("issues", "forms") for atts in state[kind].values() for a in atts if a["size"] is None]
    print(f"\norphan metadata records in the sandbox (issues and forms): {len(orphans)}")
    problems += len(orphans)
    problems += api_demo(stack, log, state)
    problems += tokens_demo(stack, log)
    problems += rfi_demo(stack, log)
    if report.crashes:
        print(f"{len(report.crashes)} invocation(s) crashed: see above")
    problems += len(report.crashes)
    print(f"function logs: {shown(Path(log.name))}")
    print("demo OK" if problems == 0 else f"demo FAILED: {problems} unexpected result(s)")
    return 0 if problems == 0 else 1


def api_demo(stack: LocalStack, log: TextIO, state: dict[str, Any], form: str = "FORM-2001") -> int:
    """The attachments API through the local gateway, signed as an IAM caller signs: list, fetch, archive, refuse."""
    problems = 0
    with LocalGateway.for_stack(stack, log=log) as gateway:
        base = gateway.url
        print(f"\nthe attachments API on the local gateway: {base} (every call SigV4-signed, as awscurl signs)")

        def call(method: str, path: str, signed: bool = True) -> requests.Response:
            auth = SigV4() if signed else None
            return requests.request(method, base + path, auth=auth, allow_redirects=False, timeout=60)

        listed = call("GET", f"/forms/{form}/attachments")
        attachments = listed.json().get("attachments", []) if listed.status_code == 200 else []
        print(f"\nGET /forms/{form}/attachments -> {listed.status_code}")
        print(f"  {'attachment id':14} {'fileName':28} {'bytes':>7} archived")
        for item in attachments:
            print(f"  {item['id'][:12]:14} {item['fileName'][:28]:28} {item['size'] or 0:>7} {item['archived']}")
        expected = {a["id"]: a for a in state["forms"].get(form, [])}
        problems += listed.status_code != 200 or {a["id"] for a in attachments} != set(expected)

        first = attachments[0] if attachments else None
        if first is not None:
            link = call("GET", f"/forms/{form}/attachments/{first['id']}/file")
            data = (
                requests.get(link.headers.get("Location", ""), timeout=60).content if link.status_code == 302 else b""
            )
            match = hashlib.sha256(data).hexdigest() == expected[first["id"]]["sha256"]
            print(
                f"\nGET .../attachments/{first['id'][:12]}…/file -> {link.status_code}, Location: a pre-signed S3 URL"
            )
            print(f"  fetched {len(data)} bytes from S3; sha256 {'matches' if match else 'DIFFERS from'} iTwin's file")
            problems += not match

        started = call("POST", f"/forms/{form}/archive")
        job = started.json()
        print(f"\nPOST /forms/{form}/archive -> {started.status_code}, job {job.get('jobId')} ({job.get('state')})")
        report = pump(stack, ARCHIVE_FUNCTION, log=log)
        done = call("GET", f"/archive-jobs/{job.get('jobId')}").json()
        print(f"  the archive queue delivered {report.delivered} request(s) to {ARCHIVE_FUNCTION}")
        print(
            f"GET /archive-jobs/{job.get('jobId')} -> {done.get('state')}: total {done.get('total')}, "
            f"archived {done.get('archived')}, skipped {done.get('skipped')} (already copied by /file), "
            f"failed {done.get('failed')}"
        )
        problems += done.get("state") != "succeeded" or done.get("total") != len(expected)
        problems += len(report.crashes)

        unsigned = call("GET", f"/forms/{form}/attachments", signed=False)
        print(f"\nthe same listing unsigned -> {unsigned.status_code} {unsigned.json().get('message')}")
        problems += unsigned.status_code != 403
        problems += webhook_demo(stack, log, base + WEBHOOK_ROUTE, form)
    return int(problems)


def webhook_demo(stack: LocalStack, log: TextIO, url: str, form: str) -> int:
    """A file attached in iTwin (as a field app would) reaches the bucket through iTwin's signed webhook."""
    from devstack.invoke import enter_environment
    from relay.settings import Settings
    from relay.vendors.factory import itwin_client

    enter_environment(stack, ARCHIVE_FUNCTION)
    itwin = itwin_client(Settings.load())
    data = b"\xff\xd8 site photo attached from the field app " * 64
    created = itwin.create_attachment("forms", form, "field-photo.jpg", "attached in iTwin, not through the bucket")
    itwin.upload(created.location, lambda: data, len(data))
    attachment = created.attachment_id or ""
    print(f"\nsigned iTwin webhooks on the same gateway: POST {url} (no IAM: the HMAC signature is the authorisation)")
    print(f"  a field app attached field-photo.jpg to {form} in iTwin: attachment {attachment[:12]}…")
    sent = requests.post(
        f"{stack.sandbox_url}/__sandbox/webhooks/send",
        json={
            "url": url,
            "secret": WEBHOOK_SECRET,
            "eventType": "forms.attachmentAttached.v1",
            "content": {"attachmentId": attachment, "formId": form, "discipline": "Civil"},
        },
        timeout=30,
    ).json()
    print(f"  the sandbox signed and sent forms.attachmentAttached.v1 -> {sent.get('status')} {sent.get('body')}")
    report = pump(stack, ARCHIVE_FUNCTION, log=log)
    key = f"archive/forms/{form}/{attachment}/field-photo.jpg"
    s3 = stack.client("s3")
    try:
        head = s3.head_object(Bucket=stack.resources["UploadBucket"], Key=key)
        copied = head["Metadata"].get("sha256") == hashlib.sha256(data).hexdigest()
    except s3.exceptions.ClientError:
        head, copied = {}, False
    print(f"  the archive queue delivered {report.delivered} request(s) to {ARCHIVE_FUNCTION}")
    print(f"  s3://…/{key}: {head.get('ContentLength', 0)} bytes, sha256 {'matches' if copied else 'MISSING'}")
    raw = b'{"eventType": "forms.attachmentAttached.v1", "messageId": "forged-1", "content": {}}'
    forged = requests.post(url, data=raw, headers={"Signature": "sha256=" + "0" * 64}, timeout=30)
    print(f"  a forged delivery (a made-up signature) -> {forged.status_code} {forged.json().get('message')}")
    return int(sent.get("status") != 202) + int(not copied) + int(forged.status_code != 401) + len(report.crashes)


def tokens_demo(stack: LocalStack, log: TextIO) -> int:
    """APS user tokens: `aps-login` with the sandbox's person-less sign-in, then the refresher's runs."""
    import json
    import socket

    from devstack.invoke import invoke
    from relay.cli import main as relay_cli

    def browser(url: str) -> None:  # what the person's browser does: follow the redirect to the callback
        requests.get(requests.get(url, allow_redirects=False, timeout=10).headers["Location"], timeout=10)

    env = stack.env(TOKENS_FUNCTION)
    os.environ.update(stack.aws_env(), RELAY_ALLOWED_TOKEN_HOSTS=env["RELAY_ALLOWED_TOKEN_HOSTS"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret_id, sandbox = env["RELAY_APS_SECRET_ID"], stack.sandbox_url
    print(f"\nAPS sign-in: python -m relay.cli aps-login --secret-id {secret_id} (the sandbox signs its test user in)")
    argv = ["aps-login", "--secret-id", secret_id, "--api-url", sandbox, "--userinfo-url", f"{sandbox}/userinfo"]
    problems = relay_cli([*argv, "--redirect-uri", f"http://127.0.0.1:{port}/callback", "--no-browser"], opener=browser)
    event = json.loads((Path(__file__).resolve().parent.parent / "events/schedule-aps-token-refresh.json").read_text())
    sm = stack.client("secretsmanager")
    for label in ("right after the sign-in", "45 minutes later (the access token expires within the margin)"):
        if label.startswith("45"):  # the clock cannot move; the secret's expiry can
            value = json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])
            value["expires_at"] -= 45 * 60
            sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))
        answer = invoke(stack, TOKENS_FUNCTION, event, log=log)
        print(f"{TOKENS_FUNCTION} {label} -> {answer['status']}")
        problems += answer["status"] != ("fresh" if label.startswith("right") else "refreshed")
    return problems


def rfi_demo(stack: LocalStack, log: TextIO) -> int:
    """A 12 MB site photo under an RFI's prefix: three signed S3 parts into DM, one item, one RFI attachment."""
    from sandbox.seed import DEMO_PROJECT, DEMO_RFI

    # 5 MiB parts (ApsPartBytes=5242880 when deploying), so 12 MB takes three parts.
    stack.functions[RFI_FUNCTION]["RELAY_APS_PART_BYTES"] = str(5 * 1024 * 1024)
    s3, bucket = stack.client("s3"), stack.resources["UploadBucket"]
    data = hashlib.sha256(b"rfi").digest() * (12_000_000 // 32)  # 12 MB
    key = f"rfis/{DEMO_PROJECT}/{DEMO_RFI}/Site photo – level 2.jpg"
    inspect = f"{stack.sandbox_url}/__sandbox/inspect"
    before = requests.get(inspect, timeout=10).json()["requests"].get("aps.s3part", 0)
    print(f"\nS3 → RFI: uploading {len(data):,} bytes to s3://{bucket}/{key}")
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"caption": "North wall crack"})
    report = pump(stack, RFI_FUNCTION, log=log)
    state = requests.get(inspect, timeout=10).json()
    parts = state["requests"].get("aps.s3part", 0) - before
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
    item_id = tags.get("relay-dm-item", "")
    item = state["aps"]["items"].get(item_id, {})
    versions = item.get("versions", [])
    match = bool(versions) and versions[-1]["sha256"] == hashlib.sha256(data).hexdigest()
    record = next(
        (
            {k: v.get("S") for k, v in row.items()}
            for row in stack.client("dynamodb").scan(TableName=stack.resources["TransfersTable"])["Items"]
            if row.get("key", {}).get("S") == key
        ),
        {},
    )
    delivered = f"{report.delivered} message(s), {report.test_events} of them s3:TestEvent"
    print(f"  {delivered}, to {RFI_FUNCTION}; the upload took {parts} signed S3 parts")
    print(f"  DM item           {item_id or '-'} ({item.get('name', '-')})")
    print(f"  DM version        {record.get('version_id') or '-'}")
    print(f"  RFI attachment id {tags.get('relay-attachment-id', '-')} (RFI {DEMO_RFI}, {tags.get('relay-status')})")
    print(f"  sha256 of the object DM assembled: {'match' if match else 'MISMATCH'}")
    ok = tags.get("relay-status") == "attached" and parts == 3 and match and bool(record.get("version_id"))
    return 0 if ok else 1


def _messages_explained(report: PumpReport, uploads: int) -> str:
    """Why there can be more messages than uploads."""
    parts = [f"{uploads} upload notifications"]
    if report.test_events:
        parts.append(f"{report.test_events} s3:TestEvent")
    others = report.delivered - report.test_events - uploads
    if others > 0:
        parts.append(f"{others} message(s) queued before the demo")
    why = "\n    (S3 sends s3:TestEvent when the bucket's notifications are set up; the relay skips it)"
    return " + ".join(parts) + (why if report.test_events else "")


def _rfc2047(text: str) -> str:
    return Header(text, "utf-8").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=__doc__)
    parser.add_argument("--running", action="store_true", help="use the stack started by `make stack-up`")
    parser.add_argument(
        "--log-file", type=Path, default=LOG_FILE, help=f"where the function's logs go (default {shown(LOG_FILE)})"
    )
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # The function logs at the template's level, into the file, as Lambda logs into CloudWatch.
    with open_log(args.log_file, truncate=True) as log:
        if args.running:
            return run(LocalStack.read(), log)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        sandbox = Sandbox().start()
        try:
            host, port = moto.get_host_and_port()
            print(f"local stack: moto server http://{host}:{port}, platform sandbox {sandbox.url}")
            stack = provision(f"http://{host}:{port}", sandbox.url)
            return run(stack, log)
        finally:
            sandbox.stop()
            moto.stop()


if __name__ == "__main__":
    sys.exit(main())
