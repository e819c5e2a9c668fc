"""A local API Gateway (REST, Lambda proxy) for the template's `Type: Api` events, with SigV4 checked like AWS_IAM."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import string
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType, TracebackType
from typing import Any, TextIO
from urllib.parse import unquote

from devstack.sigv4 import SignatureError, query_pairs, verify
from devstack.stack import ACCOUNT_ID, REGION, LocalStack
from devstack.template import Resolver

Invoker = Callable[[str, dict[str, Any]], Any]

LOCAL_SECRETS: Mapping[str, str] = MappingProxyType({"testing": "testing"})  # the local stack's access key
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # Lambda's synchronous response limit
INTEGRATION_TIMEOUT_S = 29.0  # API Gateway's default (and, for REST, usual) integration timeout
IMPLICIT_API = "ServerlessRestApi"  # what SAM names the API it creates for events without a RestApiId
_RESPONSE_KEYS = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
# Framing headers are the gateway's own: a function's would contradict the body actually sent.
_HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name


class _Answer(Exception):
    """An answer the gateway gives itself, as API Gateway does: `{"message": ...}` with x-amzn-ErrorType."""

    def __init__(self, status: int, message: str, error_type: str | None = None, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.close = status, message, error_type, close


def _missing_token() -> _Answer:
    return _Answer(403, "Missing Authentication Token", "MissingAuthenticationTokenException")


def _internal_error() -> _Answer:
    return _Answer(502, "Internal server error", "InternalServerErrorException")


@dataclass(frozen=True)
class Route:
    """One `Type: Api` event: its path template, method (or ANY) and authorizer (AWS_IAM or NONE)."""

    function: str
    event: str
    resource: str
    method: str
    auth: str
    implicit_auth: bool
    """No authorizer was named for it: neither the event nor the Api's DefaultAuthorizer."""

    @property
    def segments(self) -> list[str]:
        return [s for s in self.resource.split("/") if s]

    def match(self, segments: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
        """(how specific, path parameters) when the decoded path segments match this path template."""
        rank: list[int] = []
        params: dict[str, str] = {}
        template = self.segments
        for i, part in enumerate(template):
            if part.startswith("{") and part.endswith("+}"):
                rest = segments[i:]
                if not rest or i != len(template) - 1:
                    return None
                params[part[1:-2]] = "/".join(rest)
                rank.append(2)
                return (*rank, 3 if self.method == "ANY" else 0), params
            if i >= len(segments):
                return None
            if part.startswith("{") and part.endswith("}"):
                if not segments[i]:
                    return None
                params[part[1:-1]] = segments[i]
                rank.append(1)
            elif part == segments[i]:
                rank.append(0)
            else:
                return None
        if len(segments) != len(template):
            return None
        # API Gateway prefers literal segments to {name} to {proxy+}, and a method to ANY.
        return (*rank, 3 if self.method == "ANY" else 0), params


def _ref(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("Ref"), str):
        return str(value["Ref"])
    return None


def _authorizer(value: Any, where: str) -> str:
    name = str(value).upper() if isinstance(value, str) else None
    if name not in ("AWS_IAM", "NONE"):
        raise ValueError(f"{where}: authorizer {value!r} is not supported by the local gateway (AWS_IAM or NONE)")
    return name


def _short_id(text: str, length: int) -> str:
    """A stable id of API Gateway's shape (lower-case letters and digits) derived from `text`."""
    alphabet = string.ascii_lowercase + string.digits
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def routes_of(template: Mapping[str, Any], api: str | None = None) -> tuple[str, str, list[Route]]:
    """(the Api's logical id, its stage, its routes) from the template's functions' `Type: Api` events."""
    resources: Mapping[str, Any] = template.get("Resources", {})
    apis = {k: v for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Api"}
    if api is None:
        if len(apis) > 1:
            raise ValueError(f"the template has several APIs: choose one of {', '.join(sorted(apis))}")
        api = next(iter(apis), IMPLICIT_API)
    elif api not in apis and not (api == IMPLICIT_API and not apis):
        raise ValueError(f"{api!r} is not an AWS::Serverless::Api of the template ({', '.join(sorted(apis))})")
    globals_api: Mapping[str, Any] = template.get("Globals", {}).get("Api", {})
    props: dict[str, Any] = {**globals_api, **apis.get(api, {}).get("Properties", {})}
    resolver = Resolver(dict(template), parameters={}, pseudo={"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID})
    resolver.parameters = resolver.param_defaults()
    stage = str(resolver.resolve(props.get("StageName", "Prod")))
    default = props.get("Auth", {}).get("DefaultAuthorizer")
    default_auth = _authorizer(default, f"{api} DefaultAuthorizer") if default is not None else None

    routes: list[Route] = []
    for function, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            if event.get("Type") != "Api":
                continue
            event_props = event.get("Properties", {})
            rest_api = _ref(event_props.get("RestApiId"))
            if rest_api is None and len(apis) > 1:
                raise ValueError(f"{function}.{name}: name its RestApiId, the template has several APIs")
            # Without a RestApiId an event belongs to the template's only Api, or to the one SAM makes.
            if (rest_api or (api if len(apis) == 1 else IMPLICIT_API)) != api:
                continue
            own = (event_props.get("Auth") or {}).get("Authorizer")
            auth = _authorizer(own, f"{function}.{name}") if own is not None else default_auth
            path = str(event_props["Path"])
            if not path.startswith("/"):
                raise ValueError(f"{function}.{name}: Path {path!r} must start with /")
            method = str(event_props["Method"]).upper()
            routes.append(
                Route(function, name, path, "ANY" if method == "ANY" else method, auth or "NONE", auth is None)
            )
    seen: dict[tuple[str, str], Route] = {}
    for route in routes:
        key = ("/" + "/".join(re.sub(r"\{[^}/]+\}", "{}", s) for s in route.segments), route.method)
        if key in seen:
            raise ValueError(f"{route.function}.{route.event} and {seen[key].function}.{seen[key].event}: same route")
        seen[key] = route
    return api, stage, routes


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, refused with 413 beyond API Gateway's 10 MB without reading it all."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        size = 0
        while True:
            line = handler.rfile.readline(1024).strip()
            try:
                length = int(line.split(b";")[0], 16)
            except ValueError:
                raise _Answer(400, "Bad Request", close=True) from None
            if length == 0:
                while handler.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            size += length
            if size > MAX_REQUEST_BYTES:
                raise _Answer(413, "Request Too Long", close=True)
            chunks.append(handler.rfile.read(length))
            handler.rfile.readline(8)
    declared = handler.headers.get("Content-Length", "0").strip() or "0"
    if not declared.isdigit():
        raise _Answer(400, "Bad Request", close=True)
    if int(declared) > MAX_REQUEST_BYTES:
        # Read (and drop) what a client would still send, so it gets to read the 413 instead of a reset
        # connection; past that the connection is closed on it.
        left = min(int(declared), 4 * MAX_REQUEST_BYTES)
        while left > 0 and (chunk := handler.rfile.read(min(left, 1024 * 1024))):
            left -= len(chunk)
        raise _Answer(413, "Request Too Long", close=True)
    return handler.rfile.read(int(declared)) if int(declared) else b""


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    caller: str = "-"
    close: bool = False


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of webhook deliveries (iTwin sends many at once) would be
    # refused with resets that API Gateway never gives.
    request_queue_size = 128
    daemon_threads = True


class LocalGateway:
    """The template's REST API on a local port: routes to `invoke(function, event)`, SigV4 checked on AWS_IAM routes.

    `invoke` gets the function's logical id and an API Gateway (payload 1.0) proxy event and returns the
    function's proxy response; `secrets` maps the accepted access key ids to their secret keys.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        invoke: Invoker,
        secrets: Mapping[str, str] = LOCAL_SECRETS,
        region: str = REGION,
        host: str = "127.0.0.1",
        port: int = 0,
        api: str | None = None,
        account_id: str = ACCOUNT_ID,
        log: TextIO | None = None,
        timeout_s: float = INTEGRATION_TIMEOUT_S,
    ) -> None:
        self.api, self.stage, self.routes = routes_of(template, api)
        self.api_id = _short_id(self.api, 10)
        self.invoke = invoke
        self.secrets = secrets
        self.region = region
        self.host = host
        self.port = port
        self.account_id = account_id
        self.log = log
        self.timeout_s = timeout_s
        self._log_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def for_stack(cls, stack: LocalStack, *, log: TextIO | None = None, **kw: Any) -> LocalGateway:
        """The template's API in front of the local stack's functions, run in this process by devstack.invoke."""
        from devstack import invoke as local
        from devstack.template import load

        # One invocation at a time: an in-process invoke sets os.environ and redirects stdout for the
        # whole process, which concurrent requests would mix up.
        lock = threading.Lock()

        def invoke(function: str, event: dict[str, Any]) -> Any:
            with lock:
                return local.invoke(stack, function, event, log=log)

        return cls(load(), invoke=invoke, log=log, **kw)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> LocalGateway:
        if self._server is not None:
            return self
        gateway = self

        class Handler(_Handler):
            pass

        Handler.gateway = gateway
        self._server = _Server((self.host, self.port), Handler)
        # serve_forever polls for shutdown: a short interval keeps stop() (and each test's teardown) quick.
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="local-gateway", daemon=True
        )
        self._thread.start()
        open_routes = [f"{r.method} {r.resource}" for r in self.routes if r.implicit_auth]
        if open_routes:
            self._write(
                f"WARNING: {self.api} has no DefaultAuthorizer and these routes name none, so anyone may call them: "
                f"{', '.join(open_routes)} (only the signed webhook may be open: set Auth.DefaultAuthorizer: AWS_IAM)",
                sys.stderr if self.log is None else None,
            )
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where the stage answers, e.g. http://127.0.0.1:3000/v1 (once started)."""
        if self._server is None:
            raise RuntimeError("the gateway is not started: call start() first")
        return f"http://{self.host}:{self.port}/{self.stage}"

    def _write(self, line: str, stream: TextIO | None = None) -> None:
        target = stream or self.log
        if target is None:
            return
        with self._log_lock:
            target.write(line + "\n")
            target.flush()

    # -- one request --------------------------------------------------------------------------------

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        method = handler.command.upper()
        raw_path = handler.path.partition("?")[0].partition("#")[0]
        try:
            reply = self._answer(handler, method, request_id, started)
        except _Answer as answer:
            reply = self._error(answer)
        except Exception as exc:  # noqa: BLE001 - a bug of the gateway answers as API Gateway's own failure
            self._write(f"gateway error {request_id}: {type(exc).__name__}: {exc}")
            reply = self._error(_internal_error())
        latency = (time.monotonic() - started) * 1000
        # Logged before the answer is sent, so a caller that reads the log after its answer finds the line.
        # The query stays out of the log: a presigned URL would put a signature in it.
        self._write(f"{method} {raw_path} {reply.status} {request_id} {latency:.1f}ms {reply.caller}")
        headers = [*reply.headers, ("x-amzn-RequestId", request_id)]
        handler.send_response(reply.status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        if reply.close:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(reply.body)

    @staticmethod
    def _error(answer: _Answer) -> _Reply:
        headers = [("Content-Type", "application/json")]
        if answer.error_type:
            headers.append(("x-amzn-ErrorType", answer.error_type))
        body = json.dumps({"message": answer.message}).encode()
        return _Reply(answer.status, headers, body, close=answer.close)

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        segments = [unquote(s) for s in path.split("/")[1:]]
        if segments == [""]:
            segments = []
        best: tuple[tuple[int, ...], Route, dict[str, str]] | None = None
        for route in self.routes:
            if route.method not in (method, "ANY"):
                continue
            found = route.match(segments)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], route, found[1])
        return (best[1], best[2]) if best else None

    def _answer(self, handler: BaseHTTPRequestHandler, method: str, request_id: str, started: float) -> _Reply:
        body = _read_body(handler)
        raw_path, _, query = handler.path.partition("?")
        query = query.partition("#")[0]
        prefix = f"/{self.stage}"
        if raw_path != prefix and not raw_path.startswith(prefix + "/"):
            raise _missing_token()
        path = raw_path[len(prefix) :] or "/"
        found = self._route(method, path)
        if found is None:
            raise _missing_token()  # API Gateway answers an unknown route so, signed or not
        route, path_params = found
        host = handler.headers.get("Host", f"{self.host}:{self.port}")
        caller = None
        if route.auth == "AWS_IAM":
            try:
                caller = verify(
                    method,
                    f"http://{host}{handler.path}",
                    handler.headers.items(),
                    body,
                    secrets=self.secrets,
                    region=self.region,
                )
            except SignatureError as exc:
                raise _Answer(403, exc.message, exc.error_type) from None
        event = self._event(handler, method, route, raw_path, path, query, path_params, body, request_id, caller)
        try:
            result = self.invoke(route.function, event)
        except Exception as exc:  # noqa: BLE001 - the function failed: API Gateway answers 502
            self._write(f"{route.function} raised {type(exc).__name__}: {exc} (request {request_id}): answered 502")
            raise _internal_error() from None
        elapsed = time.monotonic() - started
        # Measured once the function returned: an in-process handler cannot be cut off at the limit as
        # API Gateway cuts off the integration, so a slow one still runs to its end before the 504.
        if elapsed > self.timeout_s:
            self._write(f"{route.function} took {elapsed:.1f}s, over {self.timeout_s:g}s (request {request_id})")
            raise _Answer(504, "Endpoint request timed out")
        try:
            status, headers, payload = _proxy_response(result)
        except ValueError as exc:
            self._write(f"Malformed Lambda proxy response from {route.function} (request {request_id}): {exc}")
            raise _internal_error() from None
        return _Reply(status, headers, payload, caller or "-")

    def _event(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        route: Route,
        raw_path: str,
        path: str,
        query: str,
        path_params: dict[str, str],
        body: bytes,
        request_id: str,
        caller: str | None,
    ) -> dict[str, Any]:
        """The proxy event (payload 1.0) API Gateway REST hands to the function."""
        multi_headers: dict[str, list[str]] = {}
        for name, value in handler.headers.items():
            if name.lower() != "x-amzn-trace-id":  # no X-Ray here: the function must not join a client's trace
                multi_headers.setdefault(name, []).append(value)
        client_ip = str(handler.client_address[0])
        forwarded = multi_headers.pop("X-Forwarded-For", [])
        multi_headers["X-Forwarded-For"] = [", ".join([*forwarded, client_ip])]
        multi_headers["X-Forwarded-Port"] = [str(self.port)]
        multi_headers["X-Forwarded-Proto"] = ["http"]
        multi_query: dict[str, list[str]] = {}
        for name, value in query_pairs(query):
            multi_query.setdefault(name, []).append(value)
        now = datetime.now(UTC)
        domain = handler.headers.get("Host", f"{self.host}:{self.port}")
        identity: dict[str, Any] = dict.fromkeys(
            (
                "cognitoIdentityPoolId",
                "accountId",
                "cognitoIdentityId",
                "caller",
                "principalOrgId",
                "accessKey",
                "cognitoAuthenticationType",
                "cognitoAuthenticationProvider",
                "userArn",
                "user",
            )
        )
        identity.update(sourceIp=client_ip, userAgent=handler.headers.get("User-Agent"))
        if caller is not None:
            identity.update(
                accessKey=caller,
                accountId=self.account_id,
                caller=caller,
                user=caller,
                userArn=f"arn:aws:iam::{self.account_id}:user/{caller}",
            )
        try:
            text: str | None = body.decode("utf-8") if body else None
            encoded = False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
        return {
            "resource": route.resource,
            # As API Gateway REST sends it: the path still percent-encoded; pathParameters decoded.
            "path": path,
            "httpMethod": method,
            # A repeated header: its last value in `headers`, all of them in `multiValueHeaders`, as API Gateway.
            "headers": {name: values[-1] for name, values in multi_headers.items()},
            "multiValueHeaders": multi_headers,
            "queryStringParameters": {n: v[-1] for n, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": _short_id(f"{route.resource} {route.method}", 6),
                "resourcePath": route.resource,
                "httpMethod": method,
                "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:12]).decode()[:15] + "=",
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "path": raw_path,
                "accountId": self.account_id,
                "protocol": handler.request_version,
                "stage": self.stage,
                "domainPrefix": domain.split(".")[0].split(":")[0],
                "domainName": domain,
                "requestId": request_id,
                "identity": identity,
                "apiId": self.api_id,
            },
            "body": text,
            "isBase64Encoded": encoded,
        }


def _header_value(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"header {name!r} has a {type(value).__name__} value")
    text = str(value)
    if "\r" in text or "\n" in text:
        raise ValueError(f"header {name!r} has a line break in its value")
    return text


def _proxy_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) from a Lambda proxy response; ValueError when API Gateway would call it malformed."""
    if not isinstance(result, dict):
        raise ValueError(f"the response is a {type(result).__name__}, not an object")
    unknown = set(result) - _RESPONSE_KEYS
    if unknown:
        raise ValueError(f"unexpected keys {sorted(unknown)}")
    if len(json.dumps(result, default=str).encode()) > MAX_RESPONSE_BYTES:
        raise ValueError(f"the response is over Lambda's {MAX_RESPONSE_BYTES} bytes")
    status = result.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"statusCode {status!r} is not an HTTP status")
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise ValueError("headers and multiValueHeaders must be objects")
    merged: dict[str, tuple[str, list[str]]] = {}
    for name, value in single.items():
        merged[str(name).lower()] = (str(name), [_header_value(name, value)])
    for name, values in multi.items():
        if not isinstance(values, list):
            raise ValueError(f"multiValueHeaders {name!r} is not a list")
        # API Gateway: a header in both keeps only multiValueHeaders' values.
        merged[str(name).lower()] = (str(name), [_header_value(name, v) for v in values])
    headers: list[tuple[str, str]] = []
    for lower, (name, values) in merged.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        if lower not in _HOP_BY_HOP:
            headers.extend((name, v) for v in values)
    if "content-type" not in merged:
        headers.append(("Content-Type", "application/json"))  # API Gateway REST's default
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise ValueError(f"body is a {type(body).__name__}, not a string")
    encoded = result.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise ValueError("isBase64Encoded must be true or false")
    if encoded:
        try:
            payload = base64.b64decode(body or "", validate=True)
        except binascii.Error:
            raise ValueError("body is not base64, but isBase64Encoded is true") from None
    else:
        payload = (body or "").encode("utf-8")
    return status, headers, payload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as API Gateway; every answer carries its Content-Length
    # Headers and body go out in two writes: with Nagle on, the body would wait out the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "LocalGateway"
    sys_version = ""
    gateway: LocalGateway

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silent: the gateway writes its own access log line (http.server's would go to stderr)."""

    def do_GET(self) -> None:
        self.gateway.serve(self)

    def do_HEAD(self) -> None:
        self.gateway.serve(self)

    def do_POST(self) -> None:
        self.gateway.serve(self)

    def do_PUT(self) -> None:
        self.gateway.serve(self)

    def do_PATCH(self) -> None:
        self.gateway.serve(self)

    def do_DELETE(self) -> None:
        self.gateway.serve(self)

    def do_OPTIONS(self) -> None:
        self.gateway.serve(self)
