"""The leak guard's detector: a planted secret is found wherever the suite could write it, and never printed."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from tests.leak_guard import Finding, LeakDetector, LeakGuard, RecordTap, secrets_in, worker_verdict


def planted() -> str:
    # Not token-shaped: the session's own guard must not take it for a sandbox token when it is logged here.
    return "planted-" + secrets.token_hex(12)


def shown(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in findings)


def test_a_secret_in_a_log_record_of_a_logger_made_later_that_does_not_propagate_is_found():
    value = planted()
    detector = secrets_in([("access token", value)])
    tap = RecordTap(detector)
    tap.install()
    try:
        quiet = logging.getLogger(f"leak-guard-test.{secrets.token_hex(4)}")  # made after the tap, as a module
        quiet.propagate = False  # imported mid-session would make it, and not propagating, as Powertools' does
        quiet.setLevel(logging.INFO)
        quiet.info("calling with %s", "Bearer " + value)
    finally:
        tap.uninstall()
    findings = detector.findings()
    assert findings == [Finding("access token", f"a log record of logger {quiet.name!r}")]
    assert value not in shown(findings)


def test_a_secret_in_a_records_extra_fields_or_traceback_is_found():
    value = planted()
    detector = secrets_in([("refresh token", value)])
    tap = RecordTap(detector)
    logger = logging.getLogger("leak-guard-test.extra")
    logger.setLevel(logging.INFO)
    tap.install()
    try:
        logger.info("rotated", extra={"secret_body": {"refresh_token": value}})
        try:
            raise RuntimeError(f"token endpoint said {value}")
        except RuntimeError:
            logger.exception("rotation failed")
    finally:
        tap.uninstall()
    assert [f.kind for f in detector.findings()] == ["refresh token"]
    assert len(detector.texts["a log record of logger 'leak-guard-test.extra'"]) == 2


def test_a_secret_in_captured_stderr_or_a_failure_report_is_found(pytestconfig):
    value = planted()
    guard = LeakGuard(pytestconfig)  # not started: nothing is patched, only its report hook is used
    guard.detector.add_secret("client secret", value)
    quiet = pytest.TestReport("t.py::test_quiet", ("t.py", 1, "test_quiet"), {}, "passed", None, "call", [])
    noisy = pytest.TestReport(
        "t.py::test_noisy",
        ("t.py", 2, "test_noisy"),
        {},
        "passed",
        None,
        "teardown",
        [("Captured stdout teardown", "all fine\n"), ("Captured stderr teardown", f"posting secret={value}\n")],
    )
    failed = pytest.TestReport(
        "t.py::test_failed", ("t.py", 3, "test_failed"), {}, "failed", f"assert '{value}' == ''", "call", []
    )
    for report in (quiet, noisy, failed):
        guard.pytest_runtest_logreport(report)
    findings = guard.detector.findings()
    assert [f.where for f in findings] == [
        "captured stderr teardown of t.py::test_noisy (teardown)",
        "the report of t.py::test_failed (call)",
    ]
    assert value not in shown(findings)


def test_a_secret_in_a_stored_error_message_is_found(aws_env):
    value = planted()
    detector = secrets_in([("webhook secret", value)])
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="transfers",
            AttributeDefinitions=[{"AttributeName": "upload", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "upload", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.put_item(TableName="transfers", Item={"upload": {"S": "u-1"}, "error_message": {"S": "ok so far"}})
        ddb.put_item(
            TableName="transfers", Item={"upload": {"S": "u-2"}, "error_message": {"S": f"403: signed with {value}"}}
        )
        detector.harvest_moto()
    findings = detector.findings()
    assert findings == [Finding("webhook secret", "an error_message in table transfers")]
    assert value not in shown(findings)


def test_the_credentials_secrets_manager_holds_become_secrets_and_the_rest_do_not(aws_env):
    client_secret, refresh = planted(), planted()
    detector = LeakDetector()
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        body = {"client_id": "relay-client-id", "client_secret": client_secret, "token_url": "http://x/token"}
        sm.create_secret(Name="aps", SecretString=json.dumps(body))
        sm.put_secret_value(SecretId="aps", SecretString=json.dumps({**body, "refresh_token": refresh}))
        sm.create_secret(Name="broken", SecretString="not json at all")
        detector.harvest_moto()
    assert detector.secrets == {client_secret: "client secret", refresh: "refresh token"}  # every version's


def test_a_sandbox_token_is_found_by_its_shape_even_when_this_process_never_saw_it_issued():
    token = "sbx-aps-" + "A" * 16 + "b-_9" * 4  # what a sandbox in a subprocess would issue
    detector = LeakDetector()
    detector.add_text("the output of subprocess python -m sandbox", f"Authorization: Bearer {token}\n")
    detector.add_text("stdout of t.py::test_x (call)", "sbx-aps-tooshort and sbx-other-" + "A" * 32)
    assert detector.findings() == [Finding("access token (by its shape)", "the output of subprocess python -m sandbox")]


def test_short_values_are_not_secrets():
    detector = secrets_in([("client secret", "testing")])  # moto's local keys: 7 characters, everywhere
    detector.add_text("stdout", "AWS_SECRET_ACCESS_KEY=testing")
    assert detector.findings() == []


def test_a_log_file_counts_from_where_it_stood_when_the_session_began(tmp_path: Path):
    value = planted()
    detector = secrets_in([("client secret", value)])
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_text(f"yesterday's run printed {value}\n")
    detector.add_file(old, old.stat().st_size)
    with old.open("a") as handle:
        handle.write("today: nothing secret\n")
    new.write_text(f"START\n{value}\nEND\n")
    detector.add_file(new)
    assert detector.findings() == [Finding("client secret", f"file {new.resolve()}")]


def test_subprocess_output_is_read_and_a_secret_in_the_command_line_is_not_printed(pytestconfig):
    value = planted()
    guard = LeakGuard(pytestconfig)
    guard.detector.add_secret("access token", value)
    guard._patch_output()
    try:
        subprocess.run([sys.executable, "-c", "import sys; print(sys.argv[1])", value], capture_output=True, check=True)
    finally:
        guard.stop()
    (finding,) = guard.detector.findings()
    assert finding.kind == "access token"
    assert finding.where.startswith("the output of subprocess ")
    assert "[secret]" in finding.where
    assert value not in str(finding)


# -- under pytest-xdist: a worker's session cannot fail the run, so the controller judges its findings --------

# The leak is in a subprocess's captured output, which only the worker running the test sees: a test's
# captured stdout would also reach the controller in the test's report, and prove nothing about workers.
LEAKING = """
import subprocess, sys

def test_a_subprocess_prints_the_webhook_secret():
    code = "from sandbox.seed import WEBHOOK_SECRET; print('signing with', WEBHOOK_SECRET)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)

def test_quiet():
    pass
"""
CLEAN = """
def test_quiet():
    print("nothing to hide")

def test_also_quiet():
    pass
"""


def inner_session(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A pytest session of its own, under the leak guard, with the project importable."""
    (tmp_path / "test_inner.py").write_text(source)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "layers" / "relay"), str(root)])}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.leak_guard", *args]
    return subprocess.run(
        [*command, str(tmp_path / "test_inner.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("workers", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist-2-workers", "no-xdist"])
def test_a_secret_a_test_prints_fails_the_run_with_or_without_xdist_workers(tmp_path: Path, workers: list[str]):
    from sandbox.seed import WEBHOOK_SECRET

    done = inner_session(tmp_path, LEAKING, *workers)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-3000:]
    assert "2 passed" in done.stdout  # the tests themselves pass: only the guard fails the run
    assert "leak guard: FAILED, 1 finding(s):" in done.stdout
    assert "  a webhook secret appears in the output of subprocess " in done.stdout
    assert WEBHOOK_SECRET not in done.stdout + done.stderr


def test_clean_xdist_workers_each_hand_over_a_verdict_and_the_run_passes(tmp_path: Path):
    done = inner_session(tmp_path, CLEAN, "-n", "2")
    assert done.returncode == pytest.ExitCode.OK, done.stdout[-3000:]
    assert "and no finding in 2 xdist worker(s)" in done.stdout


def test_a_worker_that_hands_over_no_verdict_is_a_finding_and_one_that_does_passes_its_findings_on():
    assert worker_verdict({"leak_guard_findings": []}, "gw0", None) == []
    assert worker_verdict({"leak_guard_findings": [["access token", "stdout of t.py::x (call)"]]}, "gw1", None) == [
        Finding("access token", "stdout of t.py::x (call)")
    ]
    (crashed,) = worker_verdict(None, "gw2", "worker 'gw2' crashed")
    assert str(crashed) == "an unchecked output appears in xdist worker gw2, which crashed without a leak guard verdict"
    (silent,) = worker_verdict({"exitstatus": 0}, "gw3", None)
    assert "xdist worker gw3, which ended without a leak guard verdict" in str(silent)
