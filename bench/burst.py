"""Issue 11, part 6: the burst drain. 2,000 uploads land at once; the sandbox allows R vendor requests a minute (its
sliding-window rate limit on every endpoint, answering 429 with the retry-after that frees the next slot); the pump
plays the S3 → iTwin event source mapping with the template's MaximumConcurrency.

- Target: drain time ÷ the rate-limit bound (calls needed ÷ R) ≤ 1.15, where the calls needed are the vendor calls
  the sandbox served (every call but the 429s), and the drain time runs from the first poll until the queue holds
  nothing, visible or in flight.
- 0 uploads in the DLQ; every upload attached once.
- 429s honoured, never hammered: every requestor that got a 429 made its next call only after the retry-after
  (counted client side, bench/soak.py's CallLog); the 429s seen are printed.
The same run first drains a warm-up burst with no limit: the local stack's own capacity, which must be well above R
for the ratio to measure the relay's handling of the limit rather than the machine.
moto server and the sandbox run as processes of their own; the function runs in this one.
Usage: python bench/burst.py [--uploads 2000] [--rate 600] [--warmup 200]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import threading
import time
import uuid
from typing import Any

import requests

from bench.common import local_env, provisioned_stack
from bench.soak import QUEUES, S3_ITWIN, CallLog

TARGET = 1.15


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=600, help="R: vendor requests a minute the sandbox allows")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--log", default=".local/burst-functions.log")
    args = parser.parse_args()
    local_env()
    os.environ.update(RELAY_RETRY_BASE_DELAY="0.05", RELAY_RETRY_MAX_DELAY="0.5")
    from devstack.invoke import open_log
    from devstack.template import ROOT

    with provisioned_stack() as stack, open_log(ROOT / args.log, truncate=True) as log:
        results = run(stack, args, log)
    return report(args, results)


def run(stack: Any, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from devstack.invoke import pump
    from devstack.template import shared

    admin = f"{stack.sandbox_url}/__sandbox"
    s3, sqs = stack.client("s3"), stack.client("sqs")
    bucket = stack.resources["UploadBucket"]
    queue, dlq = (stack.resources[name] for name in QUEUES[S3_ITWIN])
    concurrency = int(shared()["Parameters"]["MaximumConcurrency"]["Default"])

    def depth(url: str) -> int:
        attrs = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def served() -> int:
        counts = requests.get(f"{admin}/inspect", timeout=30).json()["requests"]
        return sum(v for k, v in counts.items() if k.startswith(("itwin.", "aps.")))

    def land(count: int) -> tuple[str, dict[str, bytes]]:
        """`count` uploads put into one issue; their notifications wait in the queue."""
        issue = f"ISSUE-BURST-{uuid.uuid4().hex[:6]}"
        requests.post(f"{admin}/itwin/issues", json={"id": issue}, timeout=30).raise_for_status()
        files = {f"burst-{n:05d}.jpg": f"photo {n} {uuid.uuid4()}".encode() * 40 for n in range(count)}
        for name, data in files.items():
            s3.put_object(Bucket=bucket, Key=f"issues/{issue}/{name}", Body=data)
        return issue, files

    def drain(calls: CallLog) -> dict[str, Any]:
        """Pump until the queue is empty, visible and in flight; the time runs from the first poll."""
        done = threading.Event()
        reports: list[Any] = []

        def pumping() -> None:
            reports.append(
                pump(
                    stack,
                    S3_ITWIN,
                    concurrency=concurrency,
                    idle_rounds=3,
                    retry_delay=0,
                    max_seconds=3600,
                    log=log,
                    errors=log,
                )
            )
            done.set()

        before, throttled = served(), calls.throttled
        began = time.perf_counter()
        thread = threading.Thread(target=pumping, daemon=True)
        thread.start()
        drained = None
        while not done.is_set():
            if depth(queue) == 0:
                drained = time.perf_counter() - began
                break
            time.sleep(0.25)
        thread.join()
        drained = drained if drained is not None else time.perf_counter() - began
        (pumped,) = reports
        return {
            "drain_s": drained,
            "calls_needed": served() - before - (calls.throttled - throttled),
            "invocations": pumped.invocations,
            "redelivered": pumped.failed,
            "crashes": len(pumped.crashes),
        }

    def attached(issue: str, files: dict[str, bytes]) -> int:
        atts = requests.get(f"{admin}/inspect", timeout=60).json()["itwin"]["issues"].get(issue, [])
        names = [a["fileName"] for a in atts if a["sha256"] is not None]
        return sum(names.count(name) == 1 for name in files) if len(names) == len(files) else -len(names)

    calls = CallLog()
    with calls.watching():
        # Warm-up, no limit: the containers import, and the stack's own pace is measured.
        issue, files = land(args.warmup)
        warm = drain(calls)
        warm["attached"] = attached(issue, files)
        issue, files = land(args.uploads)
        requests.post(
            f"{admin}/faults", json={"endpoint": "*", "rate_limit_per_minute": args.rate}, timeout=30
        ).raise_for_status()
        began_burst = time.monotonic()
        burst = drain(calls)
        requests.delete(f"{admin}/faults", timeout=30).raise_for_status()
        burst["attached"] = attached(issue, files)
    burst.update(
        dlq=depth(dlq),
        throttled=calls.throttled,
        honoured=calls.honoured,
        early=calls.early,
        early_after_giving_up=calls.early_after_giving_up,
        early_calls=calls.early_gaps[:10],
        waited_s=calls.waited_s,
        idle_s=idle_capacity(
            [t for t in calls.served if t >= began_burst],
            [w for w in calls.waits if w[0] >= began_burst],
            concurrency,
            args.rate,
        ),
    )
    return {"warmup": warm, "burst": burst, "concurrency": concurrency}


def idle_capacity(served: list[float], waits: list[tuple[float, float]], workers: int, rate: int) -> float:
    """Seconds during which the limit had room (fewer than `rate` calls served in the last minute) while every worker
    was sleeping out a 429's retry-after: capacity the burst left unused, on a 50 ms grid."""
    if not served:
        return 0.0
    served = sorted(served)
    start, end, step = served[0], served[-1], 0.05
    edges = sorted([(a, 1) for a, _ in waits] + [(b, -1) for _, b in waits])
    idle, sleeping, e = 0.0, 0, 0
    t = start
    while t < end:
        while e < len(edges) and edges[e][0] <= t:
            sleeping += edges[e][1]
            e += 1
        in_window = bisect.bisect_right(served, t) - bisect.bisect_right(served, t - 60.0)
        if sleeping >= workers and in_window < rate:
            idle += step
        t += step
    return idle


def report(args: argparse.Namespace, results: dict[str, Any]) -> int:
    warm, burst = results["warmup"], results["burst"]
    bound_s = burst["calls_needed"] / args.rate * 60
    ratio = burst["drain_s"] / bound_s
    capacity = warm["calls_needed"] / warm["drain_s"] * 60
    summary = {
        "uploads": args.uploads,
        "rate_limit_per_minute": args.rate,
        "maximum_concurrency": results["concurrency"],
        "calls_needed": burst["calls_needed"],
        "bound_s": round(bound_s, 1),
        "drain_s": round(burst["drain_s"], 1),
        "drain_over_bound": round(ratio, 3),
        "429s_seen": burst["throttled"],
        "429s_then_waited_out": burst["honoured"],
        "429s_then_called_again_early": burst["early"],
        "429s_given_up_then_next_call_early": burst["early_after_giving_up"],
        "early_calls_after_429": burst["early_calls"],
        "seconds_the_limit_had_room_while_every_worker_slept_out_a_429": round(burst["idle_s"], 1),
        "seconds_from_429s_to_the_next_call_per_worker": round(burst["waited_s"] / results["concurrency"], 1),
        "invocations": burst["invocations"],
        "records_returned_to_the_queue": burst["redelivered"],
        "crashed_invocations": burst["crashes"],
        "attached_once": burst["attached"],
        "dlq": burst["dlq"],
        "warmup_uploads": args.warmup,
        "warmup_attached_once": warm["attached"],
        "unlimited_capacity_calls_per_minute": round(capacity),
    }
    print(json.dumps(summary, indent=2))
    checks = [
        (f"drain time / rate-limit bound = {ratio:.3f} (target <= {TARGET})", ratio <= TARGET),
        (f"uploads in the DLQ = {burst['dlq']} (target 0)", burst["dlq"] == 0),
        (f"uploads attached exactly once = {burst['attached']} of {args.uploads}", burst["attached"] == args.uploads),
        (
            f"429s seen = {burst['throttled']}; next call before the retry-after: {burst['early']} "
            f"(+{burst['early_after_giving_up']} after a requestor gave up) (target 0)",
            burst["early"] + burst["early_after_giving_up"] == 0,
        ),
        (
            f"unlimited capacity {capacity:.0f} calls/min is above R = {args.rate} (else the machine is the bound)",
            capacity > args.rate,
        ),
    ]
    for text, ok in checks:
        print(("PASS " if ok else "MISS ") + text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
