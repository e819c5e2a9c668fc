"""Issue 7 targets for the signed webhook receiver, each measured in this run.

- Forgeries: 10,000 forged deliveries through the receiver's whole handler (the same code the function runs,
  with the local stack's secret): 0 may be accepted. They cover random bodies and signatures, a valid
  signature for another body, another secret, truncated signatures, `sha1=`, an empty header, upper-case hex,
  whitespace around the value, the header repeated, and a body changed by one byte.
- Acknowledgement latency: rounds of 50 concurrent valid deliveries over HTTP through the local gateway, warm,
  against the same gateway in front of a bare handler that only answers 202 (alternating rounds). Target: p99
  at most 300 ms and at most 3x the bare handler's p99.
- A third handler makes the receiver's three AWS calls (put the claim, send to the queue, settle the claim)
  with nothing else: the receiver's p99 over its p99 is what the relay's own code adds. Locally all three go to
  one moto server process, which serves them one at a time; on AWS they do not queue behind each other.
moto server and the sandbox run as separate processes; the gateway and the receiver run in this one.
Usage: python bench/itwin_webhooks.py [--rounds 10] [--forgeries 10000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import requests

from bench.common import local_env, start_servers

P99_MS, P99_RATIO, CONCURRENT = 300.0, 3.0, 50


def forgeries(secret: str, count: int, rng: random.Random) -> Iterator[tuple[str, bytes, list[str]]]:
    """(kind, body, Signature values) for `count` forged deliveries, the kinds taken in turn."""
    from relay.flows.itwin_webhooks import sign

    def body() -> bytes:
        content = {"attachmentId": uuid.UUID(int=rng.getrandbits(128)).hex, "issueId": f"I-{rng.randrange(10**6)}"}
        return json.dumps(
            {"eventType": "issues.attachmentAttached.v1", "messageId": str(uuid.uuid4()), **content}
        ).encode()

    def hexes(n: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(n))

    def one_byte(raw: bytes) -> bytes:
        changed = bytearray(raw)
        changed[rng.randrange(len(changed))] ^= 1 << rng.randrange(8)
        return bytes(changed)

    other = "another-secret-of-the-same-length-" + hexes(12)
    kinds: list[tuple[str, Callable[[bytes], tuple[bytes, list[str]]]]] = [
        ("random body and signature", lambda b: (rng.randbytes(rng.randrange(1, 2048)), ["sha256=" + hexes(64)])),
        ("valid signature for another body", lambda b: (b, [sign(secret, body())])),
        ("another secret", lambda b: (b, [sign(other, b)])),
        ("truncated signature", lambda b: (b, [sign(secret, b)[: -rng.randrange(1, 64)]])),
        ("sha1 prefix", lambda b: (b, ["sha1=" + sign(secret, b).removeprefix("sha256=")])),
        ("empty header", lambda b: (b, [""])),
        ("no header", lambda b: (b, [])),
        ("upper-case hex", lambda b: (b, ["sha256=" + sign(secret, b).removeprefix("sha256=").upper()])),
        ("whitespace around", lambda b: (b, [rng.choice([" ", "\t", "  "]) + sign(secret, b) + rng.choice(["", " "])])),
        ("header repeated", lambda b: (b, [sign(secret, b)] * 2)),
        ("body changed by one byte", lambda b: (one_byte(b), [sign(secret, b)])),
    ]
    for i in range(count):
        name, make = kinds[i % len(kinds)]
        raw, values = make(body())
        yield name, raw, values


def event_for(raw: bytes, values: list[str]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if values:
        headers["Signature"] = values[-1]
    multi = {name: [value] for name, value in headers.items()}
    if values:
        multi["Signature"] = list(values)
    return {
        "httpMethod": "POST",
        "path": "/webhooks/itwin",
        "resource": "/webhooks/itwin",
        "headers": headers,
        "multiValueHeaders": multi,
        # API Gateway passes a body that is not UTF-8 base64-encoded.
        "body": raw.decode("utf-8") if _utf8(raw) else base64.b64encode(raw).decode(),
        "isBase64Encoded": not _utf8(raw),
    }


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--forgeries", type=int, default=10_000)
    args = parser.parse_args()
    local_env()
    os.environ["POWERTOOLS_METRICS_NAMESPACE"] = "bench"  # metrics are cleared per delivery, never flushed
    moto_url, sandbox_url, procs = start_servers()
    try:
        from devstack.gateway import LocalGateway
        from devstack.stack import provision
        from devstack.template import load
        from relay.flows.itwin_webhooks import build_itwin_webhooks, sign
        from relay.observability import metrics
        from relay.settings import Settings
        from sandbox.seed import WEBHOOK_SECRET
        from sandbox.webhooks import webhook_event

        stack = provision(moto_url, sandbox_url)
        os.environ.update(stack.aws_env())
        flow = build_itwin_webhooks(Settings.load(stack.env("ItwinWebhooksFunction")))

        # -- forgeries ---------------------------------------------------------------------------------
        accepted: dict[str, int] = {}
        kinds: dict[str, int] = {}
        began = time.perf_counter()
        for kind, raw, values in forgeries(WEBHOOK_SECRET, args.forgeries, random.Random(7)):
            kinds[kind] = kinds.get(kind, 0) + 1
            if flow.handle(event_for(raw, values))["statusCode"] != 401:
                accepted[kind] = accepted.get(kind, 0) + 1
            metrics.clear_metrics()
        forgery_s = time.perf_counter() - began
        total_accepted = sum(accepted.values())

        # -- acknowledgement latency -------------------------------------------------------------------
        def bare(function: str, event: dict[str, Any]) -> Any:
            return {"statusCode": 202, "headers": {"Content-Type": "application/json"}, "body": '{"status":"queued"}'}

        def real(function: str, event: dict[str, Any]) -> Any:
            try:
                return flow.handle(event)  # concurrent, as 50 warm containers would be
            finally:
                metrics.clear_metrics()  # the function's log_metrics flushes them per invocation

        ddb, sqs = flow.deliveries.client, flow.queue.client
        table, queue_url = flow.deliveries.table, flow.queue.url

        def calls_only(function: str, event: dict[str, Any]) -> Any:
            key = {"id": {"S": f"bench#{uuid.uuid4()}"}}
            ddb.put_item(TableName=table, Item={**key, "state": {"S": "received"}})
            sqs.send_message(QueueUrl=queue_url, MessageBody="{}")
            ddb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET #s = :d",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":d": {"S": "done"}},
            )
            return bare(function, event)

        template = load()
        latencies: dict[str, list[float]] = {"relay": [], "bare": [], "calls": []}
        with (
            LocalGateway(template, invoke=real) as relay_gateway,
            LocalGateway(template, invoke=bare) as bare_gateway,
            LocalGateway(template, invoke=calls_only) as calls_gateway,
        ):
            urls = {
                "relay": relay_gateway.url + "/webhooks/itwin",
                "bare": bare_gateway.url + "/webhooks/itwin",
                "calls": calls_gateway.url + "/webhooks/itwin",
            }

            def burst(which: str, record: bool) -> None:
                bodies = [
                    json.dumps(
                        webhook_event("forms.attachmentAttached.v1", {"attachmentId": uuid.uuid4().hex, "formId": "F"})
                    ).encode()
                    for _ in range(CONCURRENT)
                ]
                barrier = threading.Barrier(CONCURRENT)
                sessions = [requests.Session() for _ in range(CONCURRENT)]
                times: list[float] = []
                lock = threading.Lock()

                def send(i: int) -> None:
                    headers = {"Content-Type": "application/json", "Signature": sign(WEBHOOK_SECRET, bodies[i])}
                    barrier.wait()
                    t0 = time.perf_counter()
                    answer = sessions[i].post(urls[which], data=bodies[i], headers=headers, timeout=30)
                    elapsed = (time.perf_counter() - t0) * 1000
                    assert answer.status_code == 202, answer.text
                    with lock:
                        times.append(elapsed)

                threads = [threading.Thread(target=send, args=(i,)) for i in range(CONCURRENT)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                assert len(times) == CONCURRENT
                if record:
                    latencies[which].extend(times)

            queued = 0

            def drain() -> None:
                """Count and delete what the round queued, so later rounds do not queue behind it (PurgeQueue is
                allowed once a minute)."""
                nonlocal queued
                while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
                    queued += len(messages)
                    entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
                    sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)

            for _ in range(2):  # warm: the secret cache, the clients' connections, the gateway
                for which in urls:
                    burst(which, False)
                drain()
            for _ in range(args.rounds):
                for which in urls:
                    burst(which, True)
                drain()
            # The same deliveries one at a time: what one delivery costs when moto is not queueing them.
            serial: list[float] = []
            session = requests.Session()
            for _ in range(CONCURRENT):
                raw = json.dumps(
                    webhook_event("forms.attachmentAttached.v1", {"attachmentId": uuid.uuid4().hex, "formId": "F"})
                ).encode()
                t0 = time.perf_counter()
                answer = session.post(
                    urls["relay"], data=raw, headers={"Signature": sign(WEBHOOK_SECRET, raw)}, timeout=30
                )
                serial.append((time.perf_counter() - t0) * 1000)
                assert answer.status_code == 202, answer.text
            drain()
    finally:
        for proc in procs:
            proc.kill()
    relay_p99, bare_p99 = p99(latencies["relay"]), p99(latencies["bare"])
    ratio = relay_p99 / bare_p99
    calls_p99 = p99(latencies["calls"])
    expected = 2 * (args.rounds + 2) * CONCURRENT + CONCURRENT  # the receiver's and the calls-only handler's
    results = {
        "forgeries": args.forgeries,
        "forgery_kinds": kinds,
        "forgeries_accepted": total_accepted,
        "forgeries_accepted_by_kind": accepted,
        "forgery_check_us_each": round(forgery_s / args.forgeries * 1e6, 1),
        "deliveries_timed": len(latencies["relay"]),
        "ack_p50_ms": round(statistics.median(latencies["relay"]), 1),
        "ack_p99_ms": round(relay_p99, 1),
        "bare_p50_ms": round(statistics.median(latencies["bare"]), 1),
        "bare_p99_ms": round(bare_p99, 1),
        "ack_p99_ratio": round(ratio, 2),
        "one_at_a_time_p50_ms": round(statistics.median(serial), 1),
        "one_at_a_time_p99_ms": round(p99(serial), 1),
        "aws_calls_only_p50_ms": round(statistics.median(latencies["calls"]), 1),
        "aws_calls_only_p99_ms": round(calls_p99, 1),
        "ack_p99_over_aws_calls_only": round(relay_p99 / calls_p99, 2),
        "archive_requests_queued": queued,
    }
    print(json.dumps(results, indent=2))
    checks = [
        (f"forged deliveries accepted = {total_accepted} of {args.forgeries} (target 0)", total_accepted == 0),
        (f"acknowledgement p99 = {relay_p99:.0f} ms (target <= {P99_MS:.0f})", relay_p99 <= P99_MS),
        (f"acknowledgement p99 / bare 202 p99 = {ratio:.2f} (target <= {P99_RATIO})", ratio <= P99_RATIO),
        (f"archive requests queued = {queued} of {expected} deliveries", queued == expected),
    ]
    for text, ok in checks:
        print(("PASS " if ok else "MISS ") + text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
