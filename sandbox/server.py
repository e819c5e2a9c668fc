"""The sandbox HTTP server: routes, auth, faults and the vendor endpoints, over real sockets."""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox import admin, aps, itwin  # noqa: F401 - importing registers the routes
from sandbox.core import Dropped, Reply, Request, find_route
from sandbox.faults import FaultInjector
from sandbox.store import Store


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "relay-sandbox/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def setup(self) -> None:
        super().setup()
        store: Store = self.server.store  # type: ignore[attr-defined]
        with store.lock:
            store.connections += 1

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")

    def dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        faults: FaultInjector = self.server.faults  # type: ignore[attr-defined]
        store: Store = self.server.store  # type: ignore[attr-defined]
        request: Request | None = None
        try:
            request = Request(self, {}, query)  # so an unrouted request's body is still drained
            (_, _, endpoint, fn), match = find_route(method, path)
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            endpoint = endpoint.format(**params)
            request = Request(self, params, query)
            with store.lock:
                store.request_counts[endpoint] = store.request_counts.get(endpoint, 0) + 1
            if not endpoint.startswith("admin."):
                delay = faults.latency(endpoint)
                if delay:
                    time.sleep(delay)
                fault = faults.decide(endpoint)
                if fault is not None:
                    if fault.kind == "drop":
                        raise Dropped()
                    if fault.kind == "delay":
                        time.sleep((fault.retry_after or 0) / 1000.0)
                        fault = None
                if fault is not None:
                    body = fault_body(endpoint, fault.status, fault.code, fault.message, fault.details)
                    raise Reply(fault.status, body, retry_headers(fault.retry_after))
            fn(request)
        except Dropped:
            self.drop()
        except Reply as reply:
            if request is not None:
                try:
                    request.drain()
                except Dropped:
                    self.drop()
                    return
            self.answer(reply.status, reply.body, reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        if body is not None and not isinstance(body, bytes):
            self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def drop(self) -> None:
        """Reset the connection: SO_LINGER 0 makes close() send RST instead of FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def retry_headers(retry_after: int | None) -> dict[str, str]:
    return {} if retry_after is None else {"retry-after": str(math.ceil(retry_after))}


def fault_body(
    endpoint: str,
    status: int,
    code: str | None = None,
    message: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> Any:
    """Injected errors carry the body each vendor documents for that status (or the code asked for)."""
    if endpoint.startswith("itwin.") and code:
        return itwin.error(code, message or f"Injected {code}.", details=details)
    if code:
        return {"developerMessage": message or f"Injected {code}.", "errorCode": code}
    if endpoint.startswith("itwin."):
        if status == 429:
            if endpoint.startswith("itwin.forms"):
                return itwin.error(
                    "TooManyRequests", "More requests were received than the subscription rate-limit allows."
                )
            return itwin.error(
                "RateLimitExceeded",
                "The client sent more requests than allowed by this API for the current tier of the client.",
            )
        return itwin.error("InternalServerError" if status >= 500 else "InjectedFault", f"Injected fault {status}.")
    if status == 429:
        return {"developerMessage": "Too many requests; retry later.", "errorCode": "RateLimited"}
    return {"developerMessage": f"Injected fault {status}.", "errorCode": f"HTTP{status}"}


class Sandbox:
    """The sandbox server, in-process (tests) or standalone (`python -m sandbox`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, data_dir: str | None = None, verbose: bool = False):
        self.store = Store(data_dir)
        self.faults = FaultInjector()
        self.httpd = ThreadingHTTPServer((host, port), RequestHandler)
        self.httpd.daemon_threads = True
        self.httpd.store = self.store  # type: ignore[attr-defined]
        self.httpd.faults = self.faults  # type: ignore[attr-defined]
        self.httpd.verbose = verbose  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{text}:{port}"

    def start(self) -> Sandbox:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.store.close()
