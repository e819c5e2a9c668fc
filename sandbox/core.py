"""Sandbox plumbing shared by the endpoint modules: routing, requests and replies."""

from __future__ import annotations

import base64
import json
import mimetypes
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from sandbox.store import CHUNK, Store

if TYPE_CHECKING:
    from sandbox.server import RequestHandler

# Bodies of rejected uploads are read and thrown away up to this size, so the client sees our answer
# instead of a broken pipe; bigger ones get the answer and a closed connection.
DRAIN_LIMIT = 256 * 1024 * 1024


class Dropped(Exception):
    """Raised to close the connection without an answer (fault injection)."""


class Reply(Exception):
    """Raised by endpoint code to answer with a status, JSON body and headers."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


Handler = Callable[["Request"], None]
Route = tuple[str, re.Pattern[str], str, Handler]
ROUTES: list[Route] = []


def route(method: str, pattern: str, endpoint: str) -> Callable[[Handler], Handler]:
    """Register an endpoint; `endpoint` names it for fault injection and request counting."""

    def register(fn: Handler) -> Handler:
        ROUTES.append((method, re.compile(f"^{pattern}$"), endpoint, fn))
        return fn

    return register


def find_route(method: str, path: str) -> tuple[Route, re.Match[str]]:
    """The route for a request, or a 405 (known path, other method) / 404 reply."""
    path_known = False
    for route_ in ROUTES:
        match = route_[1].match(path)
        if match:
            if route_[0] == method:
                return route_, match
            path_known = True
    if path_known:
        raise Reply(405, {"error": {"code": "MethodNotAllowed", "message": f"{method} not allowed here"}})
    raise Reply(404, {"error": {"code": "RouteNotFound", "message": f"No route for {method} {path}"}})


class Request:
    """What endpoint code sees of one HTTP request."""

    def __init__(self, handler: RequestHandler, params: dict[str, str], query: dict[str, list[str]]) -> None:
        self.h = handler
        self.params = params
        self.query = query
        self.store: Store = handler.server.store  # type: ignore[attr-defined]
        self.body_consumed = False

    @property
    def headers(self) -> Any:
        return self.h.headers

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def base_url(self) -> str:
        return f"http://{self.h.headers.get('Host') or '127.0.0.1'}"

    def content_length(self) -> int | None:
        raw = self.h.headers.get("Content-Length")
        return int(raw) if raw is not None and raw.isdigit() else None

    def chunks(self) -> Iterator[bytes]:
        """The request body, streamed: Content-Length or chunked transfer encoding."""
        self.body_consumed = True
        rfile = self.h.rfile
        if "chunked" not in (self.h.headers.get("Transfer-Encoding") or "").lower():
            yield from self._exactly(self.content_length() or 0)
            return
        while True:
            line = rfile.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._exactly(size)
            rfile.readline(3)

    def _exactly(self, remaining: int) -> Iterator[bytes]:
        while remaining:
            data = self.h.rfile.read(min(CHUNK, remaining))
            if not data:
                raise Dropped()  # the client went away mid-body
            remaining -= len(data)
            yield data

    def body_bytes(self, limit: int = 1024 * 1024) -> bytes:
        out = bytearray()
        for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                raise Reply(413, {"error": {"code": "RequestTooLarge", "message": "Body too large."}})
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
        value = self.h.headers.get("Authorization")
        if value is None:
            return None
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def basic(self) -> tuple[str, str] | None:
        value = self.h.headers.get("Authorization") or ""
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None
        return user, password

    def send_file(self, path: Any, size: int, content_type: str) -> None:
        self.drain()
        self.h.send_response(200)
        self.h.send_header("Content-Type", content_type)
        self.h.send_header("Content-Length", str(size))
        self.h.end_headers()
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                self.h.wfile.write(chunk)

    def drain(self) -> None:
        """Read what is left of the body so the connection can be reused (or close it if too big)."""
        if self.body_consumed:
            return
        length = self.content_length()
        if length is not None and length > DRAIN_LIMIT:
            self.h.close_connection = True
            return
        for _ in self.chunks():
            pass


def guess_type(file_name: str) -> str:
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"
