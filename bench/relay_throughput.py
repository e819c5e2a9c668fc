"""Issue 3 targets: relaying a large object (1 GiB by default) from S3 (moto) to iTwin (the sandbox).

- Memory: the relay's peak RSS may rise by at most 64 MiB while it relays the object.
- Throughput: relay time at most 1.2x a plain streamed copy between the same two endpoints
  (GetObject body → PUT to an attachment Location), measured in this run, alternating, median of rounds.
moto server and the sandbox run as separate processes; the relay runs in this one.
Usage: python bench/relay_throughput.py [--size-mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

import requests

from bench.common import GiB, MiB, Payload, PeakRss, free_port, start

TARGET_MIB, TARGET_RATIO = 64.0, 1.2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    logging.getLogger("botocore").setLevel(logging.ERROR)
    moto_port, sandbox_port = free_port(), free_port()
    moto_url, sandbox_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sandbox_port}"
    procs = [
        start(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)], f"{moto_url}/moto-api/"),
        start(
            ["-m", "sandbox", "--port", str(sandbox_port), "--max-upload-bytes", str(4 * GiB)],
            f"{sandbox_url}/__sandbox/health",
        ),
    ]
    try:
        from boto3.s3.transfer import TransferConfig

        from devstack.invoke import LambdaContext
        from devstack.stack import provision
        from relay.aws.s3objects import SizedStream
        from relay.flows.s3_to_itwin import build_s3_to_itwin
        from relay.settings import Settings
        from relay.vendors.factory import itwin_requestor
        from relay.vendors.itwin import ITwinClient

        stack = provision(moto_url, sandbox_url)
        env = stack.env("S3ToItwinFunction") | {
            "RELAY_MAX_UPLOAD_BYTES": str(4 * GiB),
            "RELAY_HTTP_READ_TIMEOUT": "300",
        }
        os.environ.update(env)
        s3 = stack.client("s3")
        bucket = stack.resources["UploadBucket"]
        key = "issues/ISSUE-1001/bench.bin"
        print(f"putting a {args.size_mib} MiB object into moto S3 ...", flush=True)
        s3.upload_fileobj(Payload(size), bucket, key, Config=TransferConfig(multipart_chunksize=64 * MiB))
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] != size:
            raise SystemExit(f"moto stored {head['ContentLength']} bytes, expected {size}")
        settings = Settings.load(env)
        requestor = itwin_requestor(settings)
        relay = build_s3_to_itwin(settings, itwin=ITwinClient(requestor))
        relay.start_invocation(LambdaContext("S3ToItwinFunction", timeout_s=900))
        assert requestor.tokens is not None
        token = requestor.tokens.token()  # the baseline copy authenticates as the relay does
        session = requests.Session()

        def plain_copy() -> float:
            location = session.post(
                f"{sandbox_url}/issues/ISSUE-1001/attachments",
                json={"fileName": "plain.bin"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ).headers["Location"]
            started = time.perf_counter()
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
            session.put(
                location, data=SizedStream(body, size), headers={"Authorization": f"Bearer {token}"}, timeout=600
            ).raise_for_status()
            return time.perf_counter() - started

        def relayed(round_no: int) -> tuple[float, float]:
            obj = {"key": key, "eTag": head["ETag"].strip('"'), "versionId": head.get("VersionId")}
            body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}]}
            # Each round is a new upload identity: clear the records of the previous round.
            ddb = stack.client("dynamodb")
            for table in (stack.resources["IdempotencyTable"], stack.resources["TransfersTable"]):
                keyname = "id" if table == stack.resources["IdempotencyTable"] else "upload"
                for item in ddb.scan(TableName=table)["Items"]:
                    ddb.delete_item(TableName=table, Key={keyname: item[keyname]})
            with PeakRss(os.getpid()) as rss:
                started = time.perf_counter()
                (outcome,) = relay.handle_message(f"bench-{round_no}", json.dumps(body))
                elapsed = time.perf_counter() - started
            if outcome.status != "attached":
                raise SystemExit(f"relay failed: {outcome}")
            return elapsed, rss.added_mib

        plain_copy()  # warm-up: connections, imports
        plain_times, relay_times, rss_added = [], [], []
        for n in range(args.rounds):
            plain_times.append(plain_copy())
            elapsed, added = relayed(n)
            relay_times.append(elapsed)
            rss_added.append(added)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    plain, relay_t = statistics.median(plain_times), statistics.median(relay_times)
    ratio = relay_t / plain
    peak = max(rss_added)
    for label, value, rounds in (
        ("plain streamed copy (baseline)", plain, plain_times),
        ("relay", relay_t, relay_times),
    ):
        rate = args.size_mib / value
        print(f"{label:31} median {value:6.2f} s ({rate:5.0f} MiB/s), rounds {[f'{t:.2f}' for t in rounds]}")
    print(f"throughput ratio relay/plain: {ratio:.2f}  (target <= {TARGET_RATIO})")
    print(f"relay peak RSS added: {peak:.1f} MiB (target <= {TARGET_MIB:.0f} MiB)")
    print(f"ratio to the memory target: {peak / TARGET_MIB:.2f}")
    ok = ratio <= TARGET_RATIO and peak <= TARGET_MIB
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
