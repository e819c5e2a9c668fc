"""What a function's cold start loads, checked in a fresh interpreter (bench/cold_start.py measures the time).

- With tracing off, no function imports the X-Ray SDK: Powertools' default provider would, for subsegments
  that are then thrown away (about 100 ms).
- Every client of a function comes from one botocore session: a second session loads botocore's endpoint data
  again (about 100 ms).
- With tracing on, the Tracer is Powertools' own, on the X-Ray recorder, as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The webhook receiver reads its secret while it imports (an unusable secret must stop it), so it needs AWS
# and is left out; it is wired as the others are (one session, the same Tracer).
FUNCTIONS = ("s3_to_itwin", "s3_to_rfi", "archive", "attachments_api", "aps_token_refresher")
NOWHERE = "http://127.0.0.1:9"  # nothing may be called at import; if something is, it fails fast
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": NOWHERE,
    "POWERTOOLS_SERVICE_NAME": "attachment-relay",
    "POWERTOOLS_METRICS_NAMESPACE": "AttachmentRelay",
    "RELAY_ITWIN_API_URL": NOWHERE,
    "RELAY_APS_API_URL": NOWHERE,
    "RELAY_ALLOWED_TOKEN_HOSTS": NOWHERE,
    "RELAY_ITWIN_SECRET_ID": "itwin",
    "RELAY_APS_SECRET_ID": "aps",
    "RELAY_APS_HUB_ID": "b.hub",
    "RELAY_IDEMPOTENCY_TABLE": "idempotency",
    "RELAY_TRANSFERS_TABLE": "transfers",
    "RELAY_MAX_RECEIVE_COUNT": "3",
    "RELAY_ARCHIVE_BUCKET": "bucket",
    "RELAY_ARCHIVE_QUEUE_URL": f"{NOWHERE}/123456789012/archive",
    "RELAY_ARCHIVE_JOBS_TABLE": "jobs",
    "RELAY_WEBHOOK_DELIVERIES_TABLE": "deliveries",
    "RELAY_TOKEN_LEASE_TABLE": "lease",
}

IMPORT_EVERY_FUNCTION = """
import importlib.util, json, sys
import botocore.session
sessions = []  # every botocore session made, kept alive or not
_init = botocore.session.Session.__init__
def _counted(self, *args, **kwargs):
    sessions.append(self)
    _init(self, *args, **kwargs)
botocore.session.Session.__init__ = _counted
for name in sys.argv[1:]:
    path = f"functions/{name}/app.py"
    spec = importlib.util.spec_from_file_location(f"function_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if name == "attachments_api":  # its service is built on first use: build it now, as a first request would
        from relay.flows.attachments_api.service import service
        service()
from relay.observability import tracer
print(json.dumps({
    "xray": sorted(m for m in sys.modules if m.startswith("aws_xray_sdk.core")),
    "sessions": len(sessions),
    "tracer_disabled": tracer.disabled,
    "provider": type(tracer.provider).__name__,
    "xray_recorder": tracer.provider is getattr(sys.modules.get("aws_xray_sdk.core"), "xray_recorder", None),
}))
"""


def run(code: str, *args: str, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_", "LAMBDA_", "RELAY_"))}
    environ |= ENV | env | {"PYTHONPATH": f"{ROOT / 'layers' / 'relay'}:{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=environ, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_with_tracing_off_no_function_imports_the_xray_sdk_and_all_clients_share_one_session():
    loaded = run(IMPORT_EVERY_FUNCTION, *FUNCTIONS, POWERTOOLS_TRACE_DISABLED="true")
    assert loaded["xray"] == []
    assert loaded["sessions"] == 1
    assert (loaded["tracer_disabled"], loaded["provider"]) == (True, "Untraced")


def test_outside_lambda_tracing_is_off_as_powertools_decides_it():
    # No POWERTOOLS_TRACE_DISABLED and no LAMBDA_TASK_ROOT: Powertools turns tracing off, and so do we.
    loaded = run(IMPORT_EVERY_FUNCTION, "s3_to_itwin")
    assert loaded["xray"] == []
    assert (loaded["tracer_disabled"], loaded["provider"]) == (True, "Untraced")


def test_in_lambda_with_tracing_on_the_tracer_is_the_xray_recorder():
    loaded = run(IMPORT_EVERY_FUNCTION, "s3_to_itwin", LAMBDA_TASK_ROOT="/var/task", AWS_XRAY_SDK_ENABLED="false")
    assert "aws_xray_sdk.core" in loaded["xray"]  # type: ignore[operator]
    assert (loaded["tracer_disabled"], loaded["xray_recorder"]) == (False, True)


DECORATED = """
import json
from relay.observability import tracer

@tracer.capture_method(capture_response=False)
def method(x):
    if x < 0:
        raise ValueError("negative")
    return x * 2

@tracer.capture_lambda_handler(capture_response=False)
def handler(event, context):
    return {"doubled": method(event["x"])}

try:
    handler({"x": -1}, None)
    raised = None
except ValueError as exc:
    raised = str(exc)
print(json.dumps({"answer": handler({"x": 21}, None), "raised": raised}))
"""


def test_with_tracing_off_the_decorated_handlers_answer_and_raise_as_before():
    assert run(DECORATED, POWERTOOLS_TRACE_DISABLED="true") == {"answer": {"doubled": 42}, "raised": "negative"}
