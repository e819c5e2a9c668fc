"""`python -m sandbox` as a user runs it: seeded by default, one clear line for a taken port, documented admin API."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from sandbox.__main__ import build_parser
from sandbox.admin import CONFIG
from sandbox.faults import ENTRY_OPTIONS, SPEC_OPTIONS
from sandbox.seed import DEMO_FORMS, DEMO_ISSUES, ITWIN_CLIENT, seed
from sandbox.server import build_router
from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'relay'}{os.pathsep}{ROOT}", "PYTHONIOENCODING": "utf-8"}


def sandbox_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


@contextmanager
def running(*args: str) -> Iterator[tuple[str, list[str]]]:
    """A standalone sandbox on a free port: its URL and the banner it printed."""
    proc = sandbox_process("--port", "0", *args)
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        while not banner or not banner[-1].startswith("admin API:"):
            line = proc.stdout.readline()
            assert line, f"the sandbox exited early: {proc.wait(10)} {proc.stderr.read() if proc.stderr else ''}"
            banner.append(line.rstrip("\n"))
        url = banner[0].removeprefix("sandbox listening on ")
        yield url, banner
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # SIGTERM is a clean stop


def test_a_taken_port_is_one_clear_line_and_a_nonzero_exit():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = sandbox_process("--port", str(port))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert out == ""
    (line,) = err.strip().splitlines()
    assert str(port) in line
    assert "already in use" in line
    assert "--port" in line


def test_started_alone_it_is_seeded_like_the_local_stack():
    with running() as (url, banner):
        state = requests.get(f"{url}/__sandbox/inspect", timeout=10).json()["itwin"]
        assert set(state["issues"]) == set(DEMO_ISSUES)
        assert set(state["forms"]) == set(DEMO_FORMS)
        form = {
            "grant_type": "client_credentials",
            "client_id": ITWIN_CLIENT[0],
            "client_secret": ITWIN_CLIENT[1],
            "scope": "itwin-platform",
        }
        assert requests.post(f"{url}/connect/token", data=form, timeout=10).status_code == 200
        printed = re.search(r"RFI container (\S+),", "\n".join(banner))
        assert printed is not None
        assert seed(url).container == printed.group(1)  # seeding again (as the stack does) keeps it
    text = "\n".join(banner)
    assert ITWIN_CLIENT[0] in text
    assert all(issue in text for issue in DEMO_ISSUES)
    assert f"{url}/__sandbox/inspect" in text


def test_no_seed_starts_empty_and_says_how_to_seed():
    with running("--no-seed") as (url, banner):
        state = requests.get(f"{url}/__sandbox/inspect", timeout=10).json()["itwin"]
        assert state == {"issues": {}, "forms": {}}
    text = "\n".join(banner)
    assert f"{url}/__sandbox/clients" in text
    assert "--seed" in text


def admin_routes() -> list[str]:
    """Every admin route as the docs write it: `POST /__sandbox/itwin/{issues|forms}`."""
    return [
        f"{r.method} " + re.sub(r"\(\?P<\w+>([^)]*)\)", r"{\1}", r.pattern.pattern.strip("^$"))
        for r in build_router().routes
        if not r.injectable
    ]


def documented_names() -> list[str]:
    return sorted(SPEC_OPTIONS | ENTRY_OPTIONS | set(CONFIG))


def normalised(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text)


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("\\|", "|")  # tables escape their pipes


@pytest.mark.parametrize("route", admin_routes())
def test_help_and_readme_document_every_admin_route(route: str):
    documented = re.compile(re.escape(normalised(route)) + r"[\s`]")  # the whole path, not a prefix of another
    assert documented.search(normalised(build_parser().format_help()))
    assert documented.search(normalised(readme()))


@pytest.mark.parametrize("name", documented_names())
def test_help_and_readme_document_every_fault_option_and_setting(name: str):
    assert name in build_parser().format_help()
    assert f"`{name}`" in readme() or f'"{name}"' in readme()


def test_help_names_every_faultable_endpoint():
    text = normalised(build_parser().format_help())
    for route in build_router().routes:
        if route.injectable:
            assert route.endpoint in text
