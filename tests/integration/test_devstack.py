"""The local stack's own tools: its commands run as the README writes them, the pump, the demo, clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_plus, urlparse

import pytest

import devstack.invoke
from devstack.__main__ import check_sandbox_port, up
from devstack.invoke import UnknownFunctionError, invoke, loaded_module
from devstack.notifications import S3Object
from devstack.stack import LocalStack
from tests.conftest import EVENTS, ROOT, load_event
from tests.integration.conftest import FUNCTION, Harness, sha256

pytestmark = pytest.mark.integration
PHOTO = EVENTS / "objects" / "photo.jpg"


def as_written(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `<venv python> -m ...` from the repository root with a plain environment: no PYTHONPATH, no AWS_*."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def state(local_stack: LocalStack, tmp_path: Path) -> Path:
    """A state file naming the session's stack, so the commands never touch a user's running one."""
    path = tmp_path / "stack.json"
    local_stack.save(path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


# -- upload, deliver, invoke as a user runs them ---------------------------------------------------


def test_upload_then_deliver_relays_a_local_file_with_its_version_identity(harness: Harness, state: Path, tmp_path):
    issue = harness.new_parent()
    log_file = tmp_path / "function.log"
    put = as_written(
        "devstack", "--state", str(state), "upload", str(PHOTO), f"issues/{issue}/", "--caption", "Riss – Süd"
    )
    assert put.returncode == 0, put.stderr
    key = f"issues/{issue}/photo.jpg"
    assert f"s3://{harness.bucket}/{key}" in put.stdout
    assert "S3 queued a notification" in put.stdout
    version = harness.s3.head_object(Bucket=harness.bucket, Key=key)["VersionId"]

    done = as_written("devstack", "--state", str(state), "deliver", "--log-file", str(log_file))
    assert done.returncode == 0, done.stderr
    (att,) = harness.attachments(issue)
    assert (att["sha256"], att["caption"]) == (sha256(PHOTO.read_bytes()), "Riss – Süd")
    assert f"{version} attached ({att['id']})" in done.stdout
    # moto's notification had no versionId: the delivery added the one AWS sends, so the identity is AWS's.
    assert harness.record_for(key)["upload"] == f"{harness.bucket}/{key}#{version}"
    # The table stays readable: the function's JSON lines are in the file the output names.
    assert not [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert f"function logs: {log_file}" in done.stdout
    lines = [json.loads(x) for x in log_file.read_text().splitlines() if x.startswith("{")]
    assert any(x.get("message") == "transfer finished" and x.get("version_id") == version for x in lines)


def test_upload_names_a_missing_parent_and_a_key_that_does_not_notify(harness: Harness, state: Path):
    missing = as_written("devstack", "--state", str(state), "upload", str(PHOTO), "issues/ISSUE-NOT-THERE/a.jpg")
    assert missing.returncode == 0, missing.stderr
    assert "does not exist in the sandbox" in missing.stdout
    assert "--create-parent" in missing.stdout
    created = as_written(
        "devstack", "--state", str(state), "upload", str(PHOTO), "issues/ISSUE-NEW-PARENT/a.jpg", "--create-parent"
    )
    assert "does not exist" not in created.stdout
    assert "ISSUE-NEW-PARENT" in harness.inspect()["itwin"]["issues"]
    quiet = as_written("devstack", "--state", str(state), "upload", str(PHOTO), "archive/a.jpg")
    assert "no notification" in quiet.stdout
    assert "forms/, issues/" in quiet.stdout


def test_invoke_command_runs_a_sample_against_the_uploaded_version(harness: Harness, state: Path, tmp_path):
    issue = harness.new_parent()
    key = f"issues/{issue}/Cracked concrete – bay 3.jpg"
    event = load_event("s3-put-issue-photo.json")
    body = json.loads(event["Records"][0]["body"])
    sample_version = body["Records"][0]["s3"]["object"]["versionId"]
    body["Records"][0]["s3"]["object"]["key"] = quote_plus(key, safe="/")
    event["Records"][0]["body"] = json.dumps(body)
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))
    put = as_written("devstack", "--state", str(state), "upload", str(PHOTO), key)
    assert put.returncode == 0, put.stderr
    harness.empty_queue("UploadQueue")
    version = harness.s3.head_object(Bucket=harness.bucket, Key=key)["VersionId"]

    run = as_written(
        "devstack", "--state", str(state), "invoke", FUNCTION, str(event_file), "--log-file", str(tmp_path / "f.log")
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"batchItemFailures": []}
    assert f"versionId {sample_version} -> {version}" in run.stderr
    assert f"({version}): attached" in run.stderr
    assert harness.tags(key, version)["relay-status"] == "attached"


def test_unknown_function_lists_the_known_ones(harness: Harness, state: Path):
    with pytest.raises(UnknownFunctionError, match=FUNCTION):
        invoke(harness.stack, "S3ToItwin", {})
    for command in (["invoke", "S3ToItwin", str(EVENTS / "s3-test-event.json")], ["deliver", "S3ToItwin"]):
        result = as_written("devstack", "--state", str(state), *command)
        assert result.returncode != 0
        assert "unknown function 'S3ToItwin'" in result.stderr
        assert FUNCTION in result.stderr
        assert "Traceback" not in result.stderr


# -- the pump ---------------------------------------------------------------------------------------


def test_pump_names_the_version_each_put_created(harness: Harness):
    issue = harness.new_parent()
    key = f"issues/{issue}/progress.jpg"
    v1 = harness.put(key, b"monday")
    v2 = harness.put(key, b"tuesday")  # v1 is no longer the current version when its notification is delivered
    report = harness.deliver()
    assert [u for u in report.uploads if u.key == key] == [
        S3Object(harness.bucket, key, v1, hashlib.md5(b"monday", usedforsecurity=False).hexdigest()),
        S3Object(harness.bucket, key, v2, hashlib.md5(b"tuesday", usedforsecurity=False).hexdigest()),
    ]
    assert {r["upload"] for r in harness.records() if r["key"] == key} == {
        f"{harness.bucket}/{key}#{v1}",
        f"{harness.bucket}/{key}#{v2}",
    }
    assert harness.tags(key, v1)["relay-status"] == harness.tags(key, v2)["relay-status"] == "attached"


def test_pump_prints_a_crashed_invocation_and_returns_its_batch(harness: Harness, monkeypatch):
    issue = harness.new_parent()
    harness.put(f"issues/{issue}/crash.jpg", b"bytes")
    devstack.invoke.load_handler(harness.stack, FUNCTION)  # loaded, so the handler can be replaced

    def crash(event, context):
        raise RuntimeError("the handler fell over")

    errors = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(loaded_module(FUNCTION), "lambda_handler", crash)
        report = harness.deliver(max_invocations=2, errors=errors)
    assert report.crashes == ["RuntimeError: the handler fell over"] * 2
    assert report.delivered == 0
    text = errors.getvalue()
    assert "Traceback" in text
    assert "RuntimeError: the handler fell over" in text
    assert "crashed again" in text  # the repeat is one line, not a second traceback
    assert text.count("Traceback") == 1
    harness.deliver()
    assert len(harness.attachments(issue)) == 1


def test_function_that_cannot_import_stops_the_pump_and_keeps_its_messages(harness: Harness, tmp_path, monkeypatch):
    (tmp_path / "app.py").write_text("import not_installed_anywhere\n")
    broken = {FUNCTION: {"code_uri": str(tmp_path), "handler": "app.lambda_handler"}}
    stack = dataclasses.replace(harness.stack, handlers=broken)
    harness.put(f"issues/{harness.new_parent()}/a.jpg", b"a")
    errors = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(devstack.invoke, "_modules", {})  # a new container, which has not imported the function yet
        report = devstack.invoke.pump(stack, FUNCTION, errors=errors)
    assert report.invocations == 1
    assert report.delivered == 0
    text = errors.getvalue()
    assert "ModuleNotFoundError: No module named 'not_installed_anywhere'" in text
    assert ".venv/bin/python -m devstack" in text
    assert harness.queue_depth("UploadQueue") >= 1
    assert harness.queue_depth("UploadDeadLetterQueue") == 0


# -- clear errors -----------------------------------------------------------------------------------


def test_a_taken_port_is_named_with_how_to_choose_another(taken_port: int, tmp_path: Path):
    state = tmp_path / "stack.json"
    try:
        with pytest.raises(SystemExit) as moto:
            up(taken_port, free_port(), state)
        with pytest.raises(SystemExit) as sandbox:
            up(free_port(), taken_port, state)
    finally:
        assert not state.exists()  # refused before anything started
    assert f"port {taken_port} (for the moto server) is already in use" in str(moto.value)
    assert "--moto-port" in str(moto.value)
    assert "RELAY_LOCAL_MOTO_PORT=" in str(moto.value)
    assert "--sandbox-port" in str(sandbox.value)
    assert "RELAY_LOCAL_SANDBOX_PORT=" in str(sandbox.value)
    cli = as_written("devstack", "--state", str(state), "up", "--moto-port", str(taken_port), timeout=30)
    assert cli.returncode == 1
    assert f"port {taken_port}" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_sandbox_alone_is_refused_where_the_running_stack_has_its_sandbox(state: Path, local_stack: LocalStack):
    port = urlparse(local_stack.sandbox_url).port
    assert port is not None
    with pytest.raises(SystemExit, match="make stack-down"):
        check_sandbox_port(port, state)
    result = as_written("devstack", "--state", str(state), "sandbox", "--port", str(port), "--verbose", timeout=30)
    assert result.returncode == 1
    assert f"its sandbox already listens on {local_stack.sandbox_url}" in result.stderr
    assert "SANDBOX_PORT=" in result.stderr


def test_sandbox_alone_names_a_port_taken_by_something_else(taken_port: int, tmp_path: Path):
    with pytest.raises(SystemExit, match=f"(?s)port {taken_port} is already in use.*SANDBOX_PORT="):
        check_sandbox_port(taken_port, tmp_path / "no-stack.json")


# -- the demo ---------------------------------------------------------------------------------------


def test_demo_as_written_prints_a_clean_table_and_names_its_log(tmp_path: Path):
    log_file = tmp_path / "demo.log"
    result = as_written("devstack.demo", "--log-file", str(log_file), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "demo OK"
    assert not [line for line in lines if line.lstrip().startswith("{")]  # no JSON log lines in the table
    assert f"function logs: {log_file}" in lines
    assert any("6 upload notifications + 1 s3:TestEvent" in line for line in lines)
    assert any("the upload took 3 signed S3 parts" in line for line in lines)
    assert any(line.strip().startswith("DM item           urn:adsk.wipprod:dm.lineage:") for line in lines)
    assert any(line.strip().startswith("RFI attachment id ") and "attached" in line for line in lines)
    assert "  sha256 of the object DM assembled: match" in lines
    assert "orphan metadata records in the sandbox (issues and forms): 0" in lines
    assert result.stderr == ""
    logged = [json.loads(x) for x in log_file.read_text().splitlines() if x.startswith("{")]
    finished = [x for x in logged if x.get("message") == "transfer finished"]
    assert len(finished) == 7  # six iTwin uploads and the RFI photo
    assert all(x["version_id"] for x in finished)  # the production identity, not the eTag one
    # The API part: listed, fetched through the 302, archived, and the unsigned call refused.
    assert "GET /forms/FORM-2001/attachments -> 200" in lines
    assert any("sha256 matches iTwin's file" in line for line in lines)
    assert any(line.startswith("GET /archive-jobs/") and "-> succeeded: total 2" in line for line in lines)
    assert "the same listing unsigned -> 403 Missing Authentication Token" in lines
    # The webhook part: the signed delivery archived the new file, and the forged one was refused.
    assert any('forms.attachmentAttached.v1 -> 202 {"status": "queued"}' in line for line in lines)
    assert any("/field-photo.jpg: 2688 bytes, sha256 matches" in line for line in lines)
    assert any("a forged delivery (a made-up signature) -> 401" in line for line in lines)
    # The tokens part: a sign-in, then the refresher's two runs; no token or code printed (the sandbox's prefixes).
    assert "Signed in as Sandbox Tester <tester@sandbox.example>" in lines
    assert [line.rsplit(" -> ", 1)[1] for line in lines if line.startswith("ApsTokenRefresherFunction ")] == [
        "fresh",
        "refreshed",
    ]
    assert not any(prefix in result.stdout for prefix in ("sbx-aps-", "sbx-refresh-", "sbx-code-"))
