"""Per-endpoint faults, switchable at run time: rate limit, error rate, latency, drops, fail-next, raw replies."""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

SPEC_OPTIONS = frozenset(
    {"rate_limit_per_minute", "error_rate", "error_status", "retry_after", "latency_ms", "drop_rate", "fail_next"}
    | {"throttle_rate"}
)
ENTRY_OPTIONS = frozenset(
    {"status", "code", "message", "details", "retry_after", "drop", "latency_ms", "count"}
    | {"headers", "body", "echo_authorization", "after_work", "short_by", "drop_after_bytes"}
)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# The server frames every answer itself; a fault that changed the framing would break the connection, not the
# client's parsing of one answer.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class Fault:
    """What to do instead of serving a call."""

    kind: str  # "rate_limit" | "error" | "drop" | "drop_mid_body" | "delay" | "reply" | "short"
    status: int = 0
    retry_after: int | None = None
    code: str | None = None
    message: str | None = None
    details: list[dict[str, Any]] | None = None
    latency_ms: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    echo_authorization: bool = False
    # The handler runs first and its answer is thrown away: the call did its work, and the caller sees only
    # the error or the reset (a 500 after the create, an answer lost on the way back).
    after_work: bool = False
    # The answer's Content-Length announces this many bytes more than are sent; then the connection closes.
    short_by: int = 0
    # The connection is reset after this many bytes of the request body were read (a reset mid-upload).
    drop_after_bytes: int = 0


@dataclass
class FaultSpec:
    rate_limit_per_minute: int | None = None
    error_rate: float = 0.0
    error_status: int = 503
    retry_after: int | None = None
    latency_ms: int = 0
    drop_rate: float = 0.0
    # Share of calls answered 429 with `retry_after` (1 s when unset), beside `error_rate`'s own status:
    # a 429 mix and a 5xx mix on one endpoint. Drawn after drop_rate and before error_rate.
    throttle_rate: float = 0.0
    fail_next: deque[Fault] = field(default_factory=deque)  # each entry is one future call's fate, in order
    window: deque[float] = field(default_factory=deque)


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise ValueError(f"status must be an integer 200..599, not {value!r}")
    return value


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    """An object, or a list of [name, value] pairs (which may repeat a name)."""
    if value is None:
        return ()
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
        raise ValueError("headers must be an object or a list of [name, value] pairs")
    result = []
    for name, text in pairs:
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            raise ValueError(f"bad header name {name!r}")
        if name.lower() in FRAMING_HEADERS:
            raise ValueError(f"{name} is set by the server")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise ValueError(f"header {name} needs a one-line string value")
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {name} must be latin-1 text, as HTTP/1.1 sends it") from None
        result.append((name, text))
    return tuple(result)


def _count(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}, not {value!r}")
    return value


def _reply(entry: dict[str, Any]) -> Fault:
    if {"code", "message", "details", "echo_authorization"} & set(entry):
        raise ValueError("a raw reply (headers/body) takes no code, message, details or echo_authorization")
    status = _status(entry.get("status", 200))
    headers = _headers(entry.get("headers"))
    raw = entry.get("body")
    if raw is None:
        body = b""
    elif isinstance(raw, str):
        body = raw.encode()
    else:
        body = json.dumps(raw).encode()
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers += (("Content-Type", "application/json"),)
    if body and status in (204, 304):
        raise ValueError(f"a {status} answer has no body")
    short_by = _count(entry["short_by"], "short_by", 1) if "short_by" in entry else 0
    return Fault("reply", status, headers=headers, body=body, short_by=short_by)


def parse_entry(entry: Any) -> Fault:
    """One fail_next entry (without its count) as the fault it stands for; ValueError names what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("each fail_next entry must be an object")
    unknown = set(entry) - ENTRY_OPTIONS
    if unknown:
        raise ValueError(f"unknown fail_next options: {sorted(unknown)}")
    after_work = entry.get("after_work", False)
    if not isinstance(after_work, bool):
        raise ValueError("after_work must be true or false")
    fault = _parse_entry({k: v for k, v in entry.items() if k != "after_work"})
    if after_work and fault.kind not in ("drop", "error", "reply"):
        raise ValueError("after_work needs a status or a drop: it says what the caller sees after the work")
    return replace(fault, after_work=after_work)


def _parse_entry(entry: dict[str, Any]) -> Fault:
    if entry.get("drop"):
        return Fault("drop")
    if "drop_after_bytes" in entry:
        if set(entry) - {"drop_after_bytes", "latency_ms"}:
            raise ValueError("drop_after_bytes takes no other option")
        return Fault("drop_mid_body", drop_after_bytes=_count(entry["drop_after_bytes"], "drop_after_bytes", 0))
    if "short_by" in entry and not {"headers", "body", "status"} & set(entry):
        # The endpoint's own answer, cut short: a create still creates, a PUT still stores.
        return Fault("short", short_by=_count(entry["short_by"], "short_by", 1))
    if "status" not in entry and entry.get("latency_ms"):
        return Fault("delay", latency_ms=int(entry["latency_ms"]))
    if "headers" in entry or "body" in entry:
        return _reply(entry)
    details = entry.get("details")
    if details is not None and not isinstance(details, list):
        raise ValueError("details must be a list of error objects")
    return Fault(
        "error",
        _status(entry.get("status", 500)),
        entry.get("retry_after"),
        entry.get("code"),
        entry.get("message"),
        details,
        echo_authorization=bool(entry.get("echo_authorization")),
    )


class FaultInjector:
    """Faults keyed by endpoint name; the key "*" applies to every endpoint."""

    def __init__(self, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._specs: dict[str, FaultSpec] = {}
        self._lock = threading.Lock()
        self._rng = rng or random.Random(7)
        self._clock = clock

    def configure(self, endpoint: str, **options: Any) -> None:
        unknown = set(options) - SPEC_OPTIONS
        if unknown:
            raise ValueError(f"unknown fault options: {sorted(unknown)}")
        entries = options.get("fail_next", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("fail_next must be a list of objects")
        # Parsed before anything changes, so a bad entry leaves the endpoint's faults as they were.
        queued = [(parse_entry({k: v for k, v in e.items() if k != "count"}), int(e.get("count", 1))) for e in entries]
        with self._lock:
            spec = self._specs.setdefault(endpoint, FaultSpec())
            for name in SPEC_OPTIONS & set(options) - {"fail_next"}:
                setattr(spec, name, options[name])
            for fault, count in queued:
                spec.fail_next.extend([fault] * count)

    def reset(self) -> None:
        with self._lock:
            self._specs.clear()

    def latency(self, endpoint: str) -> float:
        with self._lock:
            return sum(s.latency_ms for k, s in self._specs.items() if k in (endpoint, "*")) / 1000.0

    def decide(self, endpoint: str) -> Fault | None:
        """Called once per request; returns the fault to inject, if any."""
        with self._lock:
            for key in (endpoint, "*"):
                spec = self._specs.get(key)
                if spec is None:
                    continue
                if spec.fail_next:
                    return spec.fail_next.popleft()
                if spec.rate_limit_per_minute is not None:
                    now = self._clock()
                    while spec.window and now - spec.window[0] >= 60.0:
                        spec.window.popleft()
                    if len(spec.window) >= spec.rate_limit_per_minute:
                        wait = max(1, math.ceil(60.0 - (now - spec.window[0])))
                        return Fault("rate_limit", 429, wait)
                    spec.window.append(now)
                if spec.drop_rate and self._rng.random() < spec.drop_rate:
                    return Fault("drop")
                if spec.throttle_rate and self._rng.random() < spec.throttle_rate:
                    return Fault("error", 429, spec.retry_after or 1)
                if spec.error_rate and self._rng.random() < spec.error_rate:
                    return Fault("error", spec.error_status, spec.retry_after)
        return None
