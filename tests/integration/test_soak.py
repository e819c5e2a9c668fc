"""The soak (bench/soak.py), 200 uploads across every flow under the full fault mix, as a CI test.

The same code as the 1,000-upload bench; sizes here are 1..64 KiB to keep the run short, the faults are the same.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.soak import run_soak
from devstack.stack import LocalStack
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def test_200_uploads_under_faults_each_end_attached_once_or_visibly_failed(
    harness: Harness, local_stack: LocalStack, tmp_path: Path
):
    for logical in ("RfiUploadQueue", "RfiUploadDeadLetterQueue", "ArchiveQueue", "ArchiveDeadLetterQueue"):
        harness.empty_queue(logical)
    log = io.StringIO()
    result = run_soak(local_stack, 200, seed=11, min_size=1024, max_size=64 * 1024, timeout_s=10, log=log)
    summary = result.summary()
    if not result.ok():
        (tmp_path / "functions.log").write_text(log.getvalue(), encoding="utf-8")
    assert result.invariants() == [(name, 0, 0) for name, _, _ in result.invariants()], (
        summary["problems"],
        summary["orphans"],
        str(tmp_path / "functions.log"),
    )
    assert summary["statuses"].get("lost", 0) == 0
    assert summary["crashes_fired"] == summary["crashes_planned"] == 4
    assert summary["duplicates"] == {"concurrent": 20, "later": 20}
    faults = summary["faults_answered"]
    assert faults["429"] > 0, faults
    assert faults["5xx"] > 0, faults
    assert faults["dropped"] > 0, faults
    assert summary["429s_then_called_again_early"] == 0, summary["early_calls_after_429"]
