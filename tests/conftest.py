"""Fixtures shared by every tier."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
# Copies of the brief's shared/api pages, so a clone anywhere can run the contract tests (see its README.md).
VENDOR_PAGES = ROOT / "tests" / "data" / "vendor-api"
# Every tier runs under the leak guard: the session fails when a secret the stack holds was written anywhere.
pytest_plugins = ["tests.leak_guard"]


def _template_observability_env() -> None:
    """On Lambda the template's environment exists before any import; tests import relay first, so set it here."""
    from devstack.template import load

    variables = load()["Globals"]["Function"]["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
        os.environ.setdefault(name, str(variables[name]))


_template_observability_env()


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture
def lambda_context() -> Any:
    from devstack.invoke import LambdaContext

    return LambdaContext("S3ToItwinFunction", timeout_s=120)
