"""The sandbox HTTP server: one router of the vendor modules, the store and the faults, over real sockets."""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox import admin, aps, itwin
from sandbox.core import BodyTooLarge, Dropped, Failure, Match, Reply, Request, Router
from sandbox.faults import Fault, FaultInjector
from sandbox.store import CHUNK, Store


def build_router() -> Router:
    router = Router()
    for module in (admin, aps, itwin):
        module.register(router)
    return router


class SandboxServer(ThreadingHTTPServer):
    """The listening socket, with everything a request handler needs."""

    daemon_threads = True
    # Two sandboxes must never share a port unnoticed: a taken port is an error at start.
    allow_reuse_port = False

    def __init__(
        self, address: tuple[str, int], store: Store, faults: FaultInjector, router: Router, verbose: bool
    ) -> None:
        self.store = store
        self.faults = faults
        self.router = router
        self.verbose = verbose
        super().__init__(address, RequestHandler)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "relay-sandbox/1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the client's
    # delayed ACK, about 40 ms per answer.
    disable_nagle_algorithm = True
    server: SandboxServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def setup(self) -> None:
        super().setup()
        with self.server.store.lock:
            self.server.store.connections += 1

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
        query = parse_qs(split.query, keep_blank_values=True)
        request = Request(self.headers, self.rfile, query, self.server.store, self.server.faults)
        try:
            found = self.server.router.match(method, split.path)
            reply = found if isinstance(found, Reply) else self.serve(found, request)
            request.drain()  # an unread body would be parsed as the next request
            self.answer(reply, close=request.close_connection)
        except Dropped:
            self.drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def serve(self, found: Match, request: Request) -> Reply:
        endpoint = found.endpoint
        request.params = found.params
        with self.server.store.lock:
            self.server.store.request_counts[endpoint] = self.server.store.request_counts.get(endpoint, 0) + 1
        if found.route.injectable:
            injected = self.inject(endpoint, found, request)
            if injected is not None:
                return injected
        return self.run_handler(found, request)

    def run_handler(self, found: Match, request: Request) -> Reply:
        try:
            return found.route.handler(request)
        except BodyTooLarge:
            failure = Failure(413, "RequestTooLarge", "Body too large.")
            return Reply(413, found.route.error_body(found.endpoint, failure))

    def inject(self, endpoint: str, found: Match, request: Request) -> Reply | None:
        """The reply a fault puts in place of the handler's, if any; drops raise Dropped."""
        faults = self.server.faults
        delay = faults.latency(endpoint)
        if delay:
            time.sleep(delay)
        fault = faults.decide(endpoint)
        if fault is None:
            return None
        if fault.after_work:
            self.run_handler(found, request)  # the work is done; what the caller gets is the fault below
        if fault.kind == "drop":
            raise Dropped()
        if fault.kind == "drop_mid_body":
            read = 0
            for chunk in request.chunks():  # the client is sending: take some of the body, then reset
                read += len(chunk)
                if read >= fault.drop_after_bytes:
                    break
            raise Dropped()
        if fault.kind == "short":  # the endpoint's own answer, cut short on the way back
            return replace(self.run_handler(found, request), short_by=fault.short_by)
        if fault.kind == "delay":
            time.sleep(fault.latency_ms / 1000.0)
            return None
        if fault.kind == "reply":
            return Reply(fault.status, fault.body, fault.headers, short_by=fault.short_by)
        failure = Failure(fault.status, fault.code, echoed(fault, request), fault.details)
        return Reply(fault.status, found.route.error_body(endpoint, failure), retry_headers(fault.retry_after))

    def answer(self, reply: Reply, close: bool) -> None:
        if close:
            self.close_connection = True
        body = reply.body
        payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(reply.status)
        if body is not None and not isinstance(body, bytes):
            self.send_header("Content-Type", "application/json")
        for name, value in reply.headers:
            self.send_header(name, value)
        length = (reply.file.size if reply.file else len(payload)) + reply.short_by
        self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if reply.short_by:
            self.close_connection = True  # what is sent ends short of Content-Length, then the connection closes
        if reply.file is None:
            self.wfile.write(payload)
            return
        with open(reply.file.path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                self.wfile.write(chunk)

    def drop(self) -> None:
        """Reset the connection: SO_LINGER 0 makes close() send RST instead of FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def echoed(fault: Fault, request: Request) -> str | None:
    """The fault's message; with echo_authorization, followed by the request's Authorization header."""
    if not fault.echo_authorization:
        return fault.message
    # A vendor that leaks the caller's credential back in an error: the client must not log or store it.
    leaked = request.headers.get("Authorization") or "(none)"
    return f"{fault.message or f'Injected fault {fault.status}.'} Authorization: {leaked}"


def retry_headers(retry_after: int | None) -> list[tuple[str, str]]:
    return [] if retry_after is None else [("retry-after", str(math.ceil(retry_after)))]


class Sandbox:
    """The sandbox server, in-process (tests) or standalone (`python -m sandbox`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, data_dir: str | None = None, verbose: bool = False):
        self.store = Store(data_dir)
        self.faults = FaultInjector()
        self.router = build_router()
        try:
            self.httpd = SandboxServer((host, port), self.store, self.faults, self.router, verbose)
        except OSError:
            self.store.close()  # a taken port must not leave a temp dir behind
            raise
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
