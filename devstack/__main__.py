"""Start, stop and inspect the local stack: python -m devstack up|down|status|invoke."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from devstack.stack import STATE_FILE, LocalStack, provision
from devstack.template import ROOT

LOG_DIR = ROOT / ".local"


def wait_for(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {seconds:.0f}s (see {LOG_DIR})")


def spawn(name: str, args: list[str]) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )
    return process.pid


def up(moto_port: int, sandbox_port: int) -> LocalStack:
    if STATE_FILE.exists():
        down()
    moto_url, sandbox_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sandbox_port}"
    pids = {
        "moto": spawn("moto", ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]),
        "sandbox": spawn(
            "sandbox", ["-m", "sandbox", "--port", str(sandbox_port), "--data-dir", str(LOG_DIR / "sandbox-data")]
        ),
    }
    LocalStack(moto_url, sandbox_url, pids=pids).save()  # so `down` can stop them if provisioning fails
    wait_for(f"{moto_url}/moto-api/")
    wait_for(f"{sandbox_url}/__sandbox/health")
    stack = provision(moto_url, sandbox_url)
    stack.pids = pids
    stack.save()
    return stack


def down() -> None:
    if not STATE_FILE.exists():
        return
    stack = LocalStack.read()
    for pid in stack.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    STATE_FILE.unlink()


def status() -> int:
    stack = LocalStack.read()
    ok = True
    for name, url in (("moto", f"{stack.moto_url}/moto-api/"), ("sandbox", f"{stack.sandbox_url}/__sandbox/health")):
        try:
            requests.get(url, timeout=2).raise_for_status()
            print(f"{name:8} up    {url}")
        except requests.RequestException as exc:
            ok = False
            print(f"{name:8} DOWN  {url} ({type(exc).__name__})")
    s3 = stack.client("s3")
    print("buckets :", ", ".join(b["Name"] for b in s3.list_buckets()["Buckets"]))
    print("queues  :", ", ".join(stack.client("sqs").list_queues().get("QueueUrls", [])))
    print("tables  :", ", ".join(stack.client("dynamodb").list_tables()["TableNames"]))
    print("secrets :", ", ".join(s["Name"] for s in stack.client("secretsmanager").list_secrets()["SecretList"]))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start moto server and the sandbox, create the template's resources")
    start.add_argument("--moto-port", type=int, default=int(os.environ.get("RELAY_LOCAL_MOTO_PORT", "5055")))
    start.add_argument("--sandbox-port", type=int, default=int(os.environ.get("RELAY_LOCAL_SANDBOX_PORT", "8900")))
    sub.add_parser("down", help="stop the local stack")
    sub.add_parser("status", help="show what runs and what exists")
    run = sub.add_parser("invoke", help="invoke a function with an event file, against the local stack")
    run.add_argument("function", help="logical id in template.yaml, e.g. S3ToItwinFunction")
    run.add_argument("event", type=Path)
    args = parser.parse_args(argv)
    if args.command == "up":
        stack = up(args.moto_port, args.sandbox_port)
        print(f"local stack up: moto {stack.moto_url}, sandbox {stack.sandbox_url}")
        return status()
    if args.command == "down":
        down()
        print("local stack down")
        return 0
    if args.command == "status":
        return status()
    from devstack.invoke import invoke

    result = invoke(LocalStack.read(), args.function, json.loads(args.event.read_text()))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
