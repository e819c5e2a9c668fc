"""Issue 9 targets: relaying an S3 object (1 GiB by default) into BIM 360 Document Management and onto an RFI.

- Memory: the relay's peak RSS may rise by at most 64 MiB, whatever the part concurrency.
- Parallel parts: 20 parts with 100 ms added latency each (the sandbox's `aps.s3part` fault): parallel time
  at most 0.4x sequential.
- Throughput: relay time at most 1.2x a plain parallel copy S3 → signed part URLs between the same two
  endpoints (storage, signeds3upload, ranged GETs into the part PUTs, complete), measured in this run.
moto server and the sandbox run as separate processes; the relay runs in this one.
Usage: python bench/s3_to_rfi.py [--size-mib 1024] [--rounds 2] [--concurrency 4 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.common import GiB, MiB, Payload, PeakRss, local_env, start_servers

TARGET_MIB, TARGET_PARALLEL, TARGET_RATIO = 64.0, 0.4, 1.2
PROJECT, HUB = "b.demo-project", "b.demo-hub"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    size = args.size_mib * MiB
    local_env()
    moto_url, sandbox_url, procs = start_servers("--max-upload-bytes", str(4 * GiB))
    try:
        results = run(args, size, moto_url, sandbox_url)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    return report(args, results)


def run(args: argparse.Namespace, size: int, moto_url: str, sandbox_url: str) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    from devstack.invoke import LambdaContext
    from devstack.stack import provision
    from relay import constants as c
    from relay.auth.secrets import SecretStore
    from relay.auth.tokens import refresh_secret
    from relay.flows.s3_to_rfi import build_s3_to_rfi
    from relay.settings import Settings
    from relay.vendors.aps import part_count
    from relay.vendors.factory import aps_client, token_endpoint

    stack = provision(moto_url, sandbox_url)
    base_env = stack.env("S3ToRfiFunction") | {"RELAY_HTTP_READ_TIMEOUT": "300"}
    os.environ.update(base_env)
    settings = Settings.load(base_env)
    store = SecretStore(settings.aps_secret_id, default_token_url="x", default_scope="y")
    refresh_secret(
        store, stack.client("secretsmanager"), token_endpoint(settings, c.DEFAULT_APS_TOKEN_URL), grant="refresh_token"
    )
    s3, ddb = stack.client("s3"), stack.client("dynamodb")
    bucket = stack.resources["UploadBucket"]
    admin = f"{sandbox_url}/__sandbox"

    def put(name: str, nbytes: int) -> dict[str, str]:
        key = f"rfis/{PROJECT}/RFI-1/{name}"
        s3.upload_fileobj(Payload(nbytes), bucket, key, Config=TransferConfig(multipart_chunksize=64 * MiB))
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] != nbytes:
            raise SystemExit(f"moto stored {head['ContentLength']} bytes, expected {nbytes}")
        return {"key": key, "eTag": head["ETag"].strip('"'), "versionId": head["VersionId"]}

    def relay(obj: dict[str, str], env: dict[str, str], part_bytes: int | None = None) -> tuple[float, float]:
        tables = ((stack.resources["IdempotencyTable"], "id"), (stack.resources["TransfersTable"], "upload"))
        for table, keyname in tables:
            for item in ddb.scan(TableName=table)["Items"]:  # each round is a new upload identity
                ddb.delete_item(TableName=table, Key={keyname: item[keyname]})
        chosen = Settings.load(base_env | env)
        if part_bytes is not None:  # below the 5 MB rule, for the latency figure only (the sandbox allows it)
            chosen = dataclasses.replace(chosen, aps_part_bytes=part_bytes)
        flow = build_s3_to_rfi(chosen)
        flow.start_invocation(LambdaContext("S3ToRfiFunction", timeout_s=900))
        body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}]}
        with PeakRss(os.getpid()) as rss:
            started = time.perf_counter()
            (outcome,) = flow.handle_message("bench", json.dumps(body))
            elapsed = time.perf_counter() - started
        if outcome.status != "attached":
            raise SystemExit(f"relay failed: {outcome}")
        return elapsed, rss.added_mib

    aps = aps_client(settings)
    (folder,) = aps.top_folders(HUB, PROJECT)
    session = requests.Session()

    def plain_copy(obj: dict[str, str], concurrency: int, part_size: int) -> float:
        """What a hand-written parallel copy does: the same endpoints, no records, no tags, no item."""
        started = time.perf_counter()
        storage = aps.create_storage(PROJECT, folder["id"], f"plain-{uuid.uuid4().hex[:8]}.bin")
        count = part_count(size, part_size)
        upload_key: str | None = None
        urls: list[str] = []
        for first in range(1, count + 1, 25):
            upload_key, batch = aps.signed_urls(storage, min(25, count - first + 1), first, upload_key)
            urls += batch

        def one(n: int) -> None:
            start_at = (n - 1) * part_size
            length = min(part_size, size - start_at)
            data = s3.get_object(Bucket=bucket, Key=obj["key"], Range=f"bytes={start_at}-{start_at + length - 1}")[
                "Body"
            ]
            from relay.aws.s3objects import SizedStream

            session.put(urls[n - 1], data=SizedStream(data, length), timeout=600).raise_for_status()

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(1, count + 1)))
        assert upload_key is not None
        aps.complete_upload(storage, upload_key)
        return time.perf_counter() - started

    results: dict[str, Any] = {"rss": {}, "plain": [], "relay": []}
    print(f"putting a {args.size_mib} MiB object into moto S3 ...", flush=True)
    big = put(f"bench-{uuid.uuid4().hex[:6]}.bin", size)
    part_bytes = settings.aps_part_bytes
    plain_copy(big, args.concurrency[0], part_bytes)  # warm-up: connections, imports
    for _ in range(args.rounds):
        results["plain"].append(plain_copy(big, args.concurrency[0], part_bytes))
        elapsed, added = relay({**big}, {"RELAY_APS_PART_CONCURRENCY": str(args.concurrency[0])})
        results["relay"].append(elapsed)
        results["rss"].setdefault(args.concurrency[0], []).append(added)
    for concurrency in args.concurrency[1:]:
        _, added = relay({**big}, {"RELAY_APS_PART_CONCURRENCY": str(concurrency)})
        results["rss"].setdefault(concurrency, []).append(added)

    # 20 parts, each part PUT held 100 ms by the sandbox: 256 KiB parts, so the added latency dominates as the
    # target means; and 5 MiB parts (the real minimum), where loopback bandwidth, shared by both runs, weighs too.
    requests.post(f"{admin}/faults", json={"endpoint": "aps.s3part", "latency_ms": 100}, timeout=10).raise_for_status()
    for label, part in (("latency", 256 * 1024), ("latency_5mib", 5 * MiB)):
        obj = put(f"{label}-{uuid.uuid4().hex[:6]}.bin", 20 * part)
        requests.put(f"{admin}/config", json={"min_part_bytes": part}, timeout=10).raise_for_status()
        sequential, _ = relay({**obj}, {"RELAY_APS_PART_CONCURRENCY": "1"}, part)
        parallel, _ = relay({**obj}, {"RELAY_APS_PART_CONCURRENCY": "8"}, part)
        results[label] = (sequential, parallel)
    requests.delete(f"{admin}/faults", timeout=10)
    return results


def report(args: argparse.Namespace, results: dict[str, Any]) -> int:
    plain, relay_t = statistics.median(results["plain"]), statistics.median(results["relay"])
    ratio = relay_t / plain
    sequential_t, parallel_t = results["latency"]
    parallel = parallel_t / sequential_t
    peak = max(max(v) for v in results["rss"].values())
    for label, value, rounds in (
        (f"plain parallel copy ({args.concurrency[0]} at once)", plain, results["plain"]),
        ("relay", relay_t, results["relay"]),
    ):
        shown = [f"{t:.2f}" for t in rounds]
        print(f"{label:34} median {value:6.2f} s ({args.size_mib / value:5.0f} MiB/s), rounds {shown}")
    for concurrency, added in sorted(results["rss"].items()):
        print(f"relay peak RSS added, {concurrency} parts at once: {max(added):.1f} MiB")
    print(f"20 parts of 256 KiB at 100 ms: sequential {sequential_t:.2f} s, parallel (8) {parallel_t:.2f} s")
    seq5, par5 = results["latency_5mib"]
    print(f"20 parts of 5 MiB at 100 ms: sequential {seq5:.2f} s, parallel (8) {par5:.2f} s, ratio {par5 / seq5:.2f}")
    print(f"ratio parallel/sequential: {parallel:.2f}  (target <= {TARGET_PARALLEL})")
    print(f"throughput ratio relay/plain: {ratio:.2f}  (target <= {TARGET_RATIO})")
    print(f"relay peak RSS added: {peak:.1f} MiB (target <= {TARGET_MIB:.0f} MiB)")
    ok = ratio <= TARGET_RATIO and peak <= TARGET_MIB and parallel <= TARGET_PARALLEL
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
