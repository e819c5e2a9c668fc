"""Session-wide leak guard: every secret the stack holds is looked for in everything the suite wrote.

What is watched, across the whole session:
- every log record of every logger (Powertools' service logger does not propagate to the root);
- what pytest captured of stdout and stderr (fd level, so subprocesses that inherit them are included),
  its captured log, and each failure's report, for every phase of every test and every collector;
  with `-s`, sys.stdout and sys.stderr are teed instead;
- the output subprocesses hand back through `communicate` (so `subprocess.run(capture_output=True)`);
- the function log files (`devstack.invoke.open_log`), every file under the session's temporary
  directory, and what the devstack's own logs (`.local/*.log`) gained during the session;
- every `error_message` stored in a DynamoDB table of moto (in-process or the threaded server).

The secrets: the seeded client secrets and webhook secret, every token a sandbox in this process issued
or stored, every client secret it was given, the credential fields of every Secrets Manager secret moto
held, and anything shaped like a sandbox token (a sandbox in a subprocess issues those). At the end the
session fails, naming the kind of secret and where it was found, never the value.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

MIN_LENGTH = 8
# What sandbox/store.py issues: access tokens per platform and rotating refresh tokens (token_urlsafe(24)).
TOKEN_SHAPE = re.compile(r"sbx-(itwin|aps|refresh)-[A-Za-z0-9_-]{32}")
SHAPE_KIND = {"itwin": "access token", "aps": "access token", "refresh": "refresh token"}
# Which fields of a Secrets Manager secret hold a credential, and what it is.
SECRET_FIELDS = {
    "client_secret": "client secret",
    "access_token": "access token",
    "refresh_token": "refresh token",
    "current": "webhook secret",
    "previous": "webhook secret",
}
FILE_LIMIT = 64 * 1024 * 1024  # larger files under the temporary directory are payloads, not logs
WORKER_KEY = "leak_guard_findings"  # where an xdist worker puts its findings in `config.workeroutput`
STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message",
    "asctime",
}


@dataclass(frozen=True)
class Finding:
    kind: str  # "access token", "client secret", ...
    where: str  # "stdout of tests/x.py::test_y (call)", "log record (relay)", ...

    def __str__(self) -> str:
        article = "an" if self.kind[0] in "aeiou" else "a"
        return f"{article} {self.kind} appears in {self.where}"


class LeakDetector:
    """Secrets on one side, what was written on the other; `findings` names matches without their values."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}  # value -> kind
        self.texts: dict[str, set[str]] = {}  # where -> distinct texts seen there
        self.files: dict[Path, int] = {}  # file -> offset from which it counts
        self.error_messages: set[tuple[str, str]] = set()  # (table, message)

    def add_secret(self, kind: str, value: object) -> None:
        if isinstance(value, str) and len(value) >= MIN_LENGTH:
            self.secrets.setdefault(value, kind)

    def add_text(self, where: str, text: object) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if isinstance(text, str) and len(text) >= MIN_LENGTH:
            self.texts.setdefault(where, set()).add(text)

    def add_file(self, path: Path, offset: int = 0) -> None:
        path = path.resolve()
        self.files[path] = min(offset, self.files.get(path, offset))

    def add_error_message(self, table: str, message: object) -> None:
        if isinstance(message, str) and len(message) >= MIN_LENGTH:
            self.error_messages.add((table, message))

    # -- sources of secrets ------------------------------------------------------------------------

    def harvest_moto(self) -> None:
        """Credentials in every Secrets Manager secret moto holds, and every stored `error_message`."""
        try:
            from moto.dynamodb.models import dynamodb_backends
            from moto.secretsmanager.models import secretsmanager_backends
        except ImportError:  # pragma: no cover - moto is a dev requirement
            return
        for backend in _backends(secretsmanager_backends):
            for secret in list(getattr(backend, "secrets", {}).values()):
                for version in list(getattr(secret, "versions", {}).values()):
                    self.add_secret_string(version.get("secret_string"))
        for backend in _backends(dynamodb_backends):
            for name, table in list(backend.tables.items()):
                for item in list(table.all_items()):
                    attribute = item.attrs.get("error_message")
                    if attribute is not None:
                        self.add_error_message(name, attribute.value)

    def add_secret_string(self, secret_string: object) -> None:
        if not isinstance(secret_string, str):
            return
        try:
            value = json.loads(secret_string)
        except ValueError:
            return  # not JSON: the function refuses it, and it holds no credential of a known kind
        if isinstance(value, dict):
            for field_name, kind in SECRET_FIELDS.items():
                self.add_secret(kind, value.get(field_name))

    def harvest_store(self, store: Any) -> None:
        """What a sandbox store (sandbox/store.py) holds: issued tokens and the clients' secrets."""
        with store.lock:
            for token in list(store.tokens):
                self.add_secret("access token", token)
            for token in [*store.refresh_tokens, *store.used_refresh_tokens]:
                self.add_secret("refresh token", token)
            for client in list(store.clients.values()):
                self.add_secret("client secret", client.get("secret"))

    # -- the verdict -------------------------------------------------------------------------------

    def haystacks(self) -> Iterator[tuple[str, str]]:
        for where, texts in self.texts.items():
            for text in texts:
                yield where, text
        for table, message in self.error_messages:
            yield f"an error_message in table {table}", message
        for path, offset in self.files.items():
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size <= FILE_LIMIT:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        yield f"file {path}", handle.read().decode("utf-8", "replace")

    def findings(self) -> list[Finding]:
        # Token-shaped values are found in one pass of a regex; only the others need a search each.
        shaped = {v for v in self.secrets if TOKEN_SHAPE.fullmatch(v)}
        others = [(v, k) for v, k in self.secrets.items() if v not in shaped]
        found: set[Finding] = set()
        for where, text in self.haystacks():
            for match in TOKEN_SHAPE.finditer(text):
                kind = self.secrets.get(match.group(0)) or f"{SHAPE_KIND[match.group(1)]} (by its shape)"
                found.add(Finding(kind, self.redacted(where)))
            for value, kind in others:
                if value in text:
                    found.add(Finding(kind, self.redacted(where)))
        return sorted(found, key=lambda f: (f.where, f.kind))

    def redacted(self, label: str) -> str:
        """A place's name (a test id, a command line) may hold the secret too: never print it."""
        label = TOKEN_SHAPE.sub("[secret]", label)
        for value in self.secrets:
            label = label.replace(value, "[secret]")
        return label


def _backends(backend_dict: Any) -> Iterator[Any]:
    for regions in list(backend_dict.values()):
        yield from list(regions.values())


class RecordTap(logging.Handler):
    """Hands the text of every record it sees (message, traceback, extra fields) to the detector."""

    def __init__(self, detector: LeakDetector) -> None:
        super().__init__(logging.NOTSET)
        self.detector = detector
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.getMessage()]
        except Exception:  # a record whose args do not fit its message
            parts = [str(record.msg), repr(record.args)]
        if record.exc_info:
            parts.append(self._formatter.formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        parts.extend(repr(v) for k, v in vars(record).items() if k not in STANDARD_RECORD_FIELDS)
        self.detector.add_text(f"a log record of logger {record.name!r}", "\n".join(parts))

    def install(self) -> None:
        """In `Logger.callHandlers`, which every record passes once, whichever logger and whether it propagates.

        A handler on the root logger would miss Powertools' service logger (it does not propagate), and a
        handler added to each logger would miss the records of loggers created after it was added.
        """
        original = logging.Logger.callHandlers
        tap = self

        @functools.wraps(original)
        def call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
            tap.handle(record)
            original(logger, record)

        self._original: Callable[[logging.Logger, logging.LogRecord], None] | None = original
        logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        original: Callable[[logging.Logger, logging.LogRecord], None] | None = getattr(self, "_original", None)
        if original is not None:
            logging.Logger.callHandlers = original  # type: ignore[method-assign,assignment]
            self._original = None


class Tee(io.TextIOBase):
    """Writes through to `stream` and hands a copy to the detector (used when pytest does not capture)."""

    def __init__(self, stream: TextIO, detector: LeakDetector, where: str) -> None:
        self.stream, self.detector, self.where = stream, detector, where

    def write(self, text: str) -> int:
        self.detector.add_text(self.where, text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()


class LeakGuard:
    """The pytest plugin: patches the places secrets and output pass through, and judges at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.detector = LeakDetector()
        self.tap = RecordTap(self.detector)
        self.stores: weakref.WeakSet[Any] = weakref.WeakSet()
        self._undo: list[Callable[[], None]] = []
        self._streams: tuple[TextIO, TextIO] | None = None
        self.worker_findings: set[Finding] = set()  # what xdist workers reported (on the controller)
        self.workers_checked = 0

    # -- setting up --------------------------------------------------------------------------------

    def start(self) -> None:
        from sandbox.seed import APS_CLIENT, ITWIN_CLIENT, WEBHOOK_SECRET

        d = self.detector
        d.add_secret("client secret", ITWIN_CLIENT[1])
        d.add_secret("client secret", APS_CLIENT[1])
        d.add_secret("webhook secret", WEBHOOK_SECRET)
        self._patch_sandbox()
        self._patch_moto()
        self._patch_output()
        self.tap.install()
        if self.config.getoption("capture", "fd") == "no":
            self._streams = (sys.stdout, sys.stderr)
            sys.stdout = Tee(sys.stdout, d, "stdout (not captured)")  # type: ignore[assignment]
            sys.stderr = Tee(sys.stderr, d, "stderr (not captured)")  # type: ignore[assignment]
        from devstack.stack import LOG_DIR

        for log in LOG_DIR.glob("*.log"):  # only what the session adds counts: a user's old logs are theirs
            with contextlib.suppress(OSError):
                d.add_file(log, log.stat().st_size)
        self.log_dir_at_start = {p.resolve() for p in LOG_DIR.glob("*.log")}

    def _wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        setattr(owner, name, make(original))
        self._undo.append(lambda: setattr(owner, name, original))

    def _patch_sandbox(self) -> None:
        from sandbox.store import Store

        guard = self

        def issuing(kind: str) -> Callable[[Any], Any]:
            def make(original: Any) -> Any:
                @functools.wraps(original)
                def issue(store: Any, *args: Any, **kwargs: Any) -> Any:
                    result = original(store, *args, **kwargs)
                    guard.detector.add_secret(kind, result[0] if isinstance(result, tuple) else result)
                    return result

                return issue

            return make

        def harvesting(original: Any) -> Any:
            @functools.wraps(original)
            def harvested(store: Any, *args: Any, **kwargs: Any) -> Any:
                if hasattr(store, "tokens"):  # reset() also runs in __init__, before anything exists
                    guard.detector.harvest_store(store)
                guard.stores.add(store)
                return original(store, *args, **kwargs)

            return harvested

        self._wrap(Store, "issue_token", issuing("access token"))
        self._wrap(Store, "issue_refresh_token", issuing("refresh token"))
        self._wrap(Store, "reset", harvesting)
        self._wrap(Store, "close", harvesting)

    def _patch_moto(self) -> None:
        from moto.core.models import MockAWS
        from moto.server import ThreadedMotoServer

        guard = self

        def harvesting(original: Any) -> Any:
            @functools.wraps(original)
            def harvested(*args: Any, **kwargs: Any) -> Any:
                guard.detector.harvest_moto()
                return original(*args, **kwargs)

            return harvested

        self._wrap(MockAWS, "start", harvesting)  # start resets what an earlier mock left
        self._wrap(MockAWS, "stop", harvesting)
        self._wrap(ThreadedMotoServer, "stop", harvesting)

    def _patch_output(self) -> None:
        import devstack.invoke

        guard = self

        def communicating(original: Any) -> Any:
            @functools.wraps(original)
            def communicate(process: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
                out, err = original(process, *args, **kwargs)
                where = f"the output of subprocess {_argv(process.args)}"
                guard.detector.add_text(where, out)
                guard.detector.add_text(where, err)
                return out, err

            return communicate

        def opening(original: Any) -> Any:
            @functools.wraps(original)
            def open_log(path: Path, *args: Any, **kwargs: Any) -> Any:
                guard.detector.add_file(Path(path))
                return original(path, *args, **kwargs)

            return open_log

        self._wrap(subprocess.Popen, "communicate", communicating)
        self._wrap(devstack.invoke, "open_log", opening)

    # -- hooks -------------------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """On the xdist controller: take over a worker's findings, which its own session cannot fail on."""
        self.worker_findings.update(worker_verdict(getattr(node, "workeroutput", None), _worker_name(node), error))
        self.workers_checked += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._report(report, f"{report.nodeid} ({report.when})")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._report(report, f"collecting {report.nodeid or 'the session'}")

    def _report(self, report: pytest.TestReport | pytest.CollectReport, label: str) -> None:
        when = getattr(report, "when", None)
        for title, text in report.sections:
            # A test's teardown report repeats the sections of its setup and call: read each once.
            if when is None or title.endswith(f" {when}"):
                self.detector.add_text(f"{title.lower()} of {label}", text)
        if report.failed or report.outcome == "skipped":
            self.detector.add_text(f"the report of {label}", report.longreprtext)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.finish(session)

    def finish(self, session: pytest.Session) -> None:
        d = self.detector
        for store in list(self.stores):
            if hasattr(store, "tokens"):
                d.harvest_store(store)
        d.harvest_moto()
        from devstack.stack import LOG_DIR

        for log in LOG_DIR.glob("*.log"):
            if log.resolve() not in self.log_dir_at_start:
                d.add_file(log)
        factory: pytest.TempPathFactory | None = getattr(session.config, "_tmp_path_factory", None)
        basetemp = factory.getbasetemp() if factory is not None else None
        if basetemp is not None and basetemp.is_dir():
            for path in basetemp.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    d.add_file(path)
        self.stop()
        checking = time.monotonic()
        findings = d.findings()
        took = time.monotonic() - checking
        workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            # An xdist worker: its exit status never reaches the controller, so hand the verdict over.
            workeroutput[WORKER_KEY] = [[f.kind, f.where] for f in findings]
            return
        findings = sorted({*findings, *self.worker_findings}, key=lambda f: (f.where, f.kind))
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        write: Callable[[str], None] = (
            (lambda line: reporter.write_line(line)) if reporter is not None else (lambda line: print(line))
        )
        if not findings:
            if reporter is not None:
                reporter.write_sep("-", "leak guard")
            workers = f", and no finding in {self.workers_checked} xdist worker(s)" if self.workers_checked else ""
            write(
                f"leak guard: no secret in the output ({len(d.secrets)} secrets, "
                f"{sum(len(t) for t in d.texts.values())} texts, {len(d.files)} files, "
                f"{len(d.error_messages)} error messages checked in {took:.2f} s{workers})"
            )
            return
        if reporter is not None:
            reporter.write_sep("=", "leak guard: secrets found in the output (values not shown)", red=True)
        write(f"leak guard: FAILED, {len(findings)} finding(s):")
        for finding in findings:
            write(f"  {finding}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def stop(self) -> None:
        self.tap.uninstall()
        if self._streams is not None:
            sys.stdout, sys.stderr = self._streams
            self._streams = None
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def worker_verdict(workeroutput: dict[str, Any] | None, worker: str, error: object) -> list[Finding]:
    """The findings an xdist worker handed over; a worker that handed over no verdict is a finding itself.

    A worker that crashed or never reached its session's end had its output checked by nobody, so the run
    cannot pass on its account.
    """
    verdict = (workeroutput or {}).get(WORKER_KEY)
    if not isinstance(verdict, list):
        why = "crashed" if error else "ended"
        return [Finding("unchecked output", f"xdist worker {worker}, which {why} without a leak guard verdict")]
    return [Finding(str(kind), str(where)) for kind, where in verdict]


def _worker_name(node: Any) -> str:
    gateway = getattr(node, "gateway", None)
    return str(getattr(gateway, "id", None) or getattr(node, "workerid", "?"))


def _argv(args: object) -> str:
    words = args if isinstance(args, (list, tuple)) else [args]
    shown = " ".join(str(w) for w in words)
    return shown[:120]


def secrets_in(values: Iterable[tuple[str, str]]) -> LeakDetector:
    """A detector holding these (kind, value) secrets, for tests of the detector itself."""
    detector = LeakDetector()
    for kind, value in values:
        detector.add_secret(kind, value)
    return detector


def pytest_configure(config: pytest.Config) -> None:
    guard = LeakGuard(config)
    config.pluginmanager.register(guard, "leak-guard")
    guard.start()
