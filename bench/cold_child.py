"""One cold start, run by bench/cold_start.py in a fresh interpreter: standard library only before the clock starts.

Usage: python bench/cold_child.py SPEC.json RESULT.json
SPEC names the mode ("function": import CODE_DIR's handler module; "bare": import boto3 and build SERVICES'
clients, with a handler that answers at once), the handler, and two events: the first invocation's and a warm
second one's. RESULT gets the import, first and warm times (ms, wall; and this process's CPU time, cold and
warm), the answers, and (function mode) the boto3 clients the module holds after both invocations, for the bare
handler to build the same ones.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
import uuid
import weakref
from typing import Any


class Context:
    """What Lambda passes as `context`, with a real clock behind the remaining time."""

    def __init__(self, function_name: str, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def bare(services: list[str]) -> Any:
    """The baseline: boto3 imported, the same clients built at import, and an answer at once."""
    import boto3

    clients = [boto3.client(service) for service in services]

    def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "clients": len(clients)}

    return lambda_handler


def clients_held() -> list[str]:
    """The service name of every botocore client alive in this process (after the clock stopped)."""
    client_type = getattr(sys.modules.get("botocore.client"), "BaseClient", None)
    if client_type is None:
        return []
    # Weak proxies to a client pass isinstance too (botocore's S3 region redirector holds one): not counted.
    return sorted(
        o.meta.service_model.service_name
        for o in gc.get_objects()
        if isinstance(o, client_type) and not isinstance(o, weakref.ProxyTypes)
    )


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    first, warm = spec["events"]
    if spec["mode"] == "function":
        sys.path.insert(0, spec["code_dir"])  # Lambda's /var/task; the layer comes in through PYTHONPATH
    module_name, _, attr = spec["handler"].rpartition(".")
    started, started_cpu = time.perf_counter(), time.process_time()
    if spec["mode"] == "function":
        handler = getattr(importlib.import_module(module_name), attr)
    else:
        handler = bare(spec["services"])
    imported = time.perf_counter()
    answers = [handler(first, Context(spec["function"], spec["timeout"]))]
    invoked, invoked_cpu = time.perf_counter(), time.process_time()
    answers.append(handler(warm, Context(spec["function"], spec["timeout"])))
    done, done_cpu = time.perf_counter(), time.process_time()
    result = {
        "import_ms": (imported - started) * 1000,
        "first_ms": (invoked - imported) * 1000,
        "warm_ms": (done - invoked) * 1000,
        # This process's CPU time (the servers' is not in it): on a shared machine it varies far less than wall.
        "cpu_cold_ms": (invoked_cpu - started_cpu) * 1000,
        "cpu_warm_ms": (done_cpu - invoked_cpu) * 1000,
        "answers": answers,
        "clients": clients_held() if spec["mode"] == "function" else spec["services"],
        "xray": "aws_xray_sdk.core" in sys.modules,
    }
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        json.dump(result, out, default=str)


if __name__ == "__main__":
    main()
