"""Issue 6 targets for the attachments API and the archive, each a ratio against a baseline of the same run.

- Listing a form of 120 attachments (3 iTwin pages) through the signed local API, warm, against listing
  them with the iTwin client directly from the same sandbox: at most 1.3x (medians of alternating rounds).
- Archiving a 30 MiB attachment: the relay's peak RSS may grow by at most 32 MiB.
- Archiving it: at most 1.2x the time of a plain streamed copy from iTwin's GET into an S3 multipart upload
  (8 MiB parts, sequential, no hashing, no staging), between the same two endpoints.
moto server and the sandbox run as separate processes; the relay and the local gateway run in this one.
Usage: python bench/attachments_api.py [--rounds 15] [--size-mib 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

from bench.common import MiB, PeakRss, free_port, start

LIST_RATIO, ARCHIVE_MIB, ARCHIVE_RATIO = 1.3, 32.0, 1.2
PART = 8 * MiB


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size-mib", type=int, default=30)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    os.environ.update(POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="1")
    logging.getLogger("botocore").setLevel(logging.ERROR)
    moto_port, sandbox_port = free_port(), free_port()
    moto_url, sandbox_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sandbox_port}"
    procs = [
        start(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)], f"{moto_url}/moto-api/"),
        start(["-m", "sandbox", "--port", str(sandbox_port)], f"{sandbox_url}/__sandbox/health"),
    ]
    try:
        from devstack.gateway import LocalGateway
        from devstack.sigv4 import SigV4
        from devstack.stack import provision
        from relay.aws.archive import ArchiveStore
        from relay.flows.archive import Archiver, AttachmentInfo
        from relay.settings import Settings
        from relay.vendors.factory import itwin_client

        stack = provision(moto_url, sandbox_url)
        os.environ.update(stack.aws_env())
        settings = Settings.load(stack.env("AttachmentsApiFunction"))
        itwin = itwin_client(settings)
        bucket = stack.resources["UploadBucket"]
        s3 = stack.client("s3")
        requests.post(f"{sandbox_url}/__sandbox/itwin/forms", json={"id": "FORM-BENCH"}, timeout=10)
        for i in range(120):
            created = itwin.create_attachment("forms", "FORM-BENCH", f"photo-{i:03}.jpg", f"photo {i}")
            itwin.upload(created.location, lambda: b"x" * 1000, 1000)

        # -- listing ---------------------------------------------------------------------------------
        with LocalGateway.for_stack(stack) as gateway:
            url = f"{gateway.url}/forms/FORM-BENCH/attachments"
            session = requests.Session()
            auth = SigV4()

            def through_api() -> None:
                answer = session.get(url, auth=auth, timeout=60)
                assert answer.status_code == 200, answer.text
                assert len(answer.json()["attachments"]) == 120

            def direct() -> None:
                assert len(list(itwin.list_attachments("forms", "FORM-BENCH"))) == 120

            for _ in range(3):  # warm: the container, the token, the connections
                through_api()
                direct()
            api_times, direct_times = [], []
            for _ in range(args.rounds):
                api_times.append(timed(through_api))
                direct_times.append(timed(direct))
            # The same with a vendor that takes 25 ms a page, as a real one over the internet does at best.
            requests.post(
                f"{sandbox_url}/__sandbox/faults", json={"endpoint": "itwin.forms.list", "latency_ms": 25}, timeout=10
            )
            slow_api, slow_direct = [], []
            for _ in range(max(5, args.rounds // 2)):
                slow_api.append(timed(through_api))
                slow_direct.append(timed(direct))
            requests.delete(f"{sandbox_url}/__sandbox/faults", timeout=10)
        slow_ratio = statistics.median(slow_api) / statistics.median(slow_direct)
        api_median, direct_median = statistics.median(api_times), statistics.median(direct_times)
        list_ratio = api_median / direct_median

        # -- archiving a large attachment ------------------------------------------------------------
        size = args.size_mib * MiB
        created = itwin.create_attachment("forms", "FORM-BENCH", "drone.tif")
        content: bytes | None = os.urandom(size)
        itwin.upload(created.location, lambda: content, size)
        content = None  # freed before any memory is measured
        assert created.attachment_id
        info = AttachmentInfo(created.attachment_id, "drone.tif", size)
        store = ArchiveStore(s3, bucket, part_size=settings.archive_part_bytes)
        archiver = Archiver(itwin, store)
        key = store.key("forms", "FORM-BENCH", info.id, info.fileName)

        def forget() -> None:
            for v in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
                s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])

        def relay() -> None:
            forget()
            assert archiver.ensure("forms", "FORM-BENCH", info).copied

        def plain() -> None:
            response = itwin.download("forms", "FORM-BENCH", info.id)
            upload_id = s3.create_multipart_upload(Bucket=bucket, Key="plain/drone.tif")["UploadId"]
            parts, buffer, number = [], bytearray(), 0

            def send(data: bytes) -> None:
                nonlocal number
                number += 1
                etag = s3.upload_part(
                    Bucket=bucket, Key="plain/drone.tif", UploadId=upload_id, PartNumber=number, Body=data
                )["ETag"]
                parts.append({"PartNumber": number, "ETag": etag})

            for chunk in response.raw.iter_content(MiB):
                buffer += chunk
                if len(buffer) >= PART:
                    send(bytes(buffer[:PART]))
                    del buffer[:PART]
            if buffer:
                send(bytes(buffer))
            s3.complete_multipart_upload(
                Bucket=bucket, Key="plain/drone.tif", UploadId=upload_id, MultipartUpload={"Parts": parts}
            )

        # Memory from the first archive on: the allocator keeps what a copy used, so later rounds add nothing.
        # The relay first, so no earlier copy has grown the allocator for it; then the baseline the same way.
        with PeakRss(os.getpid()) as rss:
            relay()
        with PeakRss(os.getpid()) as plain_rss:
            plain()
        relay_times, plain_times, growth = [], [], [rss.added_mib]
        for _ in range(max(3, args.rounds // 3)):
            forget()
            with PeakRss(os.getpid()) as rss:
                relay_times.append(timed(lambda: archiver.ensure("forms", "FORM-BENCH", info)))
            growth.append(rss.added_mib)
            plain_times.append(timed(plain))
        relay_median, plain_median = statistics.median(relay_times), statistics.median(plain_times)
        archive_ratio = relay_median / plain_median
        peak = max(growth)
    finally:
        for proc in procs:
            proc.kill()
    results = {
        "list_through_api_s": round(api_median, 4),
        "list_direct_s": round(direct_median, 4),
        "list_ratio": round(list_ratio, 2),
        "list_ratio_vendor_25ms_a_page": round(slow_ratio, 2),
        "archive_mib": args.size_mib,
        "archive_relay_s": round(relay_median, 3),
        "archive_plain_s": round(plain_median, 3),
        "archive_ratio": round(archive_ratio, 2),
        "archive_peak_rss_growth_mib": round(peak, 1),
        "plain_copy_peak_rss_growth_mib": round(plain_rss.added_mib, 1),
    }
    print(json.dumps(results, indent=2))
    checks = [
        (f"listing through the API / direct = {list_ratio:.2f} (target <= {LIST_RATIO})", list_ratio <= LIST_RATIO),
        (f"archive peak RSS growth = {peak:.1f} MiB (target <= {ARCHIVE_MIB})", peak <= ARCHIVE_MIB),
        (
            f"archive time / plain copy = {archive_ratio:.2f} (target <= {ARCHIVE_RATIO})",
            archive_ratio <= ARCHIVE_RATIO,
        ),
    ]
    for text, ok in checks:
        print(("PASS " if ok else "MISS ") + text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
