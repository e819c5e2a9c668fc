"""Sandbox plumbing the endpoint modules share: the router, what a handler sees of a request, and replies."""

from __future__ import annotations

import base64
import json
import mimetypes
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from io import BufferedIOBase
from typing import Any
from urllib.parse import parse_qs, unquote

from sandbox.faults import FaultInjector
from sandbox.store import CHUNK, Store, StoredFile

# Bodies of rejected uploads are read and thrown away up to this size, so the client sees our answer
# instead of a broken pipe; bigger ones get the answer and a closed connection.
DRAIN_LIMIT = 256 * 1024 * 1024
JSON_BODY_LIMIT = 1024 * 1024


class Dropped(Exception):
    """The connection is to be reset without an answer: the client left mid-body, or a fault says so."""


class BodyTooLarge(Exception):
    """A JSON or form body over JSON_BODY_LIMIT; the server answers 413 in the route's vendor shape."""


@dataclass(frozen=True)
class Reply:
    """What a handler answers: a status, a JSON value or raw bytes (or a stored file), and headers."""

    status: int
    body: Any = None
    headers: Sequence[tuple[str, str]] = ()
    file: StoredFile | None = None
    short_by: int = 0  # a fault: Content-Length announces this many bytes more than are sent


@dataclass(frozen=True)
class Failure:
    """An error the plumbing answers for a route (injected fault, oversized body) in its vendor's shape."""

    status: int
    code: str | None = None
    message: str | None = None
    details: list[dict[str, Any]] | None = None


ErrorBody = Callable[[str, Failure], Any]


def oauth_error_body(endpoint: str, failure: Failure) -> Any:
    """Token endpoints speak OAuth (RFC 6749 section 5.2), whichever vendor runs them."""
    code = failure.code or ("temporarily_unavailable" if failure.status >= 500 else "invalid_request")
    return {"error": code, "error_description": failure.message or f"Injected fault {failure.status}."}


Handler = Callable[["Request"], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str  # names the route for faults and counts; may use the path's groups: "itwin.{kind}.create"
    handler: Handler
    error_body: ErrorBody
    injectable: bool  # admin routes never get faults, or a test could not switch them off


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]

    @property
    def endpoint(self) -> str:
        return self.route.endpoint.format(**self.params)


def generic_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class Router:
    """Routes in registration order; each vendor module adds its own with `register(router)`."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self,
        method: str,
        pattern: str,
        endpoint: str,
        handler: Handler,
        *,
        error_body: ErrorBody,
        injectable: bool = True,
    ) -> None:
        self.routes.append(Route(method, re.compile(f"^{pattern}$"), endpoint, handler, error_body, injectable))

    def match(self, method: str, path: str) -> Match | Reply:
        """The route for a request, or a 405 (known path, other method) / 404 reply."""
        path_known = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found:
                if route.method == method:
                    return Match(route, {k: unquote(v) for k, v in found.groupdict().items()})
                path_known = True
        if path_known:
            return Reply(405, generic_error("MethodNotAllowed", f"{method} not allowed here"))
        return Reply(404, generic_error("RouteNotFound", f"No route for {method} {path}"))


class Request:
    """What endpoint code sees of one HTTP request, and the sandbox state it may change."""

    def __init__(
        self,
        headers: Message,
        rfile: BufferedIOBase,
        query: dict[str, list[str]],
        store: Store,
        faults: FaultInjector,
    ) -> None:
        self.headers = headers
        self.rfile = rfile
        self.query = query
        self.params: dict[str, str] = {}
        self.store = store
        self.faults = faults
        self.bytes_read = 0
        self.close_connection = False
        self._body: Iterator[bytes] | None = None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '127.0.0.1'}"

    def content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        return int(raw) if raw is not None and raw.isdigit() else None

    def chunks(self) -> Iterator[bytes]:
        """The request body, streamed: Content-Length or chunked transfer encoding. It can be read once."""
        if self._body is None:
            self._body = self._read()
        return self._body

    def _read(self) -> Iterator[bytes]:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            yield from self._exactly(self.content_length() or 0)
            return
        while True:
            line = self.rfile.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._exactly(size)
            self.rfile.readline(3)

    def _exactly(self, remaining: int) -> Iterator[bytes]:
        while remaining:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                raise Dropped()  # the client went away mid-body
            remaining -= len(data)
            self.bytes_read += len(data)
            yield data

    def body_bytes(self, limit: int = JSON_BODY_LIMIT) -> bytes:
        out = bytearray()
        for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                raise BodyTooLarge()
        return bytes(out)

    def json(self) -> Any:
        raw = self.body_bytes()
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return None

    def form(self) -> dict[str, str]:
        raw = self.body_bytes().decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def bearer(self) -> str | None:
        value = self.headers.get("Authorization")
        if value is None:
            return None
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def basic(self) -> tuple[str, str] | None:
        value = self.headers.get("Authorization") or ""
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None
        return user, password

    def drain(self) -> None:
        """Read what is left of the body (a handler may stop early) so the connection can be reused."""
        length = self.content_length()
        if length is not None and length - self.bytes_read > DRAIN_LIMIT:
            self.close_connection = True
            return
        for _ in self.chunks():
            pass


def guess_type(file_name: str) -> str:
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"
