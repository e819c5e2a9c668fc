"""Helpers for the benchmarks: separate server processes, RSS sampling, lazily generated payloads."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], health: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'relay'}:{ROOT}"}
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(health, timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{args} did not start")


class Payload:
    """`size` bytes made on the fly (a repeating 1 MiB block): a file-like object with a length."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0
        self.block = os.urandom(MiB)

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int | None = -1) -> bytes:
        """Exactly `amount` bytes (or what is left): readers such as s3transfer take short reads as EOF."""
        remaining = self.size - self.sent
        amount = remaining if amount is None or amount < 0 else min(amount, remaining)
        parts = []
        while amount > 0:
            start = self.sent % MiB
            chunk = self.block[start : start + amount]
            parts.append(chunk)
            self.sent += len(chunk)
            amount -= len(chunk)
        return b"".join(parts) if len(parts) != 1 else parts[0]


class PeakRss:
    """Samples a process's RSS every few milliseconds; `peak - base` is what an operation added."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def added_mib(self) -> float:
        return (self.peak - self.base) / MiB


def local_env() -> None:
    """The process environment every bench runs the relay under: moto's keys, and Powertools kept quiet."""
    import logging

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    os.environ.update(POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="1")
    # On Lambda the template's service name and metrics namespace exist before any import (tests/conftest.py
    # sets them the same way); without a namespace a metric set that fills up cannot flush.
    from devstack.template import load

    variables = load()["Globals"]["Function"]["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
        os.environ.setdefault(name, str(variables[name]))
    logging.getLogger("botocore").setLevel(logging.ERROR)


def start_servers(*sandbox_args: str) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    """moto server and the sandbox as processes of their own: (moto URL, sandbox URL, processes to stop)."""
    moto_port, sandbox_port = free_port(), free_port()
    moto_url, sandbox_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sandbox_port}"
    procs = [
        start(["-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)], f"{moto_url}/moto-api/"),
        start(["-m", "sandbox", "--port", str(sandbox_port), *sandbox_args], f"{sandbox_url}/__sandbox/health"),
    ]
    return moto_url, sandbox_url, procs


@contextlib.contextmanager
def provisioned_stack(*sandbox_args: str) -> Iterator[Any]:
    """moto server and the sandbox started, the local stack provisioned on them and its AWS environment set;
    both servers stopped on the way out."""
    from devstack.stack import provision

    moto_url, sandbox_url, procs = start_servers(*sandbox_args)
    try:
        stack = provision(moto_url, sandbox_url)
        os.environ.update(stack.aws_env())
        yield stack
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
