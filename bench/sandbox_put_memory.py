"""Issue 2 target: a 1 GiB PUT raises the sandbox's peak RSS by less than 64 MiB.

Runs the sandbox as its own process and samples its RSS while a 1 GiB attachment streams in; the
baseline in the same run is a 16 MiB PUT, so the ratio shows whether memory grows with the file.
Usage: python bench/sandbox_put_memory.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import sys
import time

import requests

from bench.common import GiB, MiB, Payload, PeakRss, free_port, start

TARGET_MIB = 64.0


def put(base: str, headers: dict[str, str], size: int, pid: int) -> tuple[float, float]:
    location = requests.post(
        f"{base}/issues/BENCH/attachments", json={"fileName": "big.bin"}, headers=headers, timeout=30
    ).headers["Location"]
    with PeakRss(pid) as rss:
        started = time.perf_counter()
        response = requests.put(location, data=Payload(size), headers=headers, timeout=600)
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return rss.added_mib, size / MiB / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(["-m", "sandbox", "--port", str(port), "--max-upload-bytes", str(4 * GiB)], f"{base}/__sandbox/health")
    try:
        requests.post(
            f"{base}/__sandbox/clients", json={"platform": "itwin", "client_id": "b", "client_secret": "s"}, timeout=10
        )
        requests.post(f"{base}/__sandbox/itwin/issues", json={"id": "BENCH"}, timeout=10)
        token = requests.post(
            f"{base}/connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "b",
                "client_secret": "s",
                "scope": "itwin-platform",
            },
            timeout=10,
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        put(base, headers, MiB, proc.pid)  # warm-up: imports, buffers, first connection
        small, small_rate = put(base, headers, 16 * MiB, proc.pid)
        big, big_rate = put(base, headers, args.size_mib * MiB, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"sandbox peak RSS added, 16 MiB PUT (baseline): {small:7.1f} MiB  ({small_rate:.0f} MiB/s)")
    print(f"sandbox peak RSS added, {args.size_mib} MiB PUT:           {big:7.1f} MiB  ({big_rate:.0f} MiB/s)")
    print(f"ratio big/baseline: {big / max(small, 0.1):.2f}")
    print(f"ratio to the {TARGET_MIB:.0f} MiB target: {big / TARGET_MIB:.2f}")
    ok = big < TARGET_MIB
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
