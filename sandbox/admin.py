"""Admin endpoints under /__sandbox/: seed data, switch faults, configure limits, inspect what exists."""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.core import Reply, Request, route
from sandbox.faults import FaultInjector
from sandbox.webhooks import send_webhook


def body(req: Request) -> dict[str, Any]:
    data = req.json()
    if not isinstance(data, dict):
        raise Reply(400, {"error": {"code": "BadAdminRequest", "message": "JSON object expected"}})
    return data


def need(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise Reply(400, {"error": {"code": "BadAdminRequest", "message": f"{name!r} is required"}})
    return value


@route("POST", "/__sandbox/reset", "admin.reset")
def reset(req: Request) -> None:
    req.store.reset()
    faults: FaultInjector = req.h.server.faults  # type: ignore[attr-defined]
    faults.reset()
    raise Reply(204)


@route("POST", "/__sandbox/itwin/(?P<kind>issues|forms)", "admin.itwin.parent")
def add_parent(req: Request) -> None:
    pid = need(body(req), "id")
    with req.store.lock:
        table = req.store.issues if req.params["kind"] == "issues" else req.store.forms
        table.setdefault(pid, {})
    raise Reply(201, {"id": pid})


@route("POST", "/__sandbox/clients", "admin.clients")
def add_client(req: Request) -> None:
    data = body(req)
    platform = need(data, "platform")
    if platform not in ("itwin", "aps"):
        raise Reply(400, {"error": {"code": "BadAdminRequest", "message": "platform is itwin or aps"}})
    with req.store.lock:
        req.store.clients[need(data, "client_id")] = {"secret": need(data, "client_secret"), "platform": platform}
    raise Reply(201, {"client_id": data["client_id"]})


@route("POST", "/__sandbox/aps/refresh-tokens", "admin.aps.refresh")
def grant_refresh(req: Request) -> None:
    """Stands in for the user's three-legged consent: hands out a first refresh token."""
    client_id = need(body(req), "client_id")
    raise Reply(201, {"refresh_token": req.store.issue_refresh_token(client_id)})


@route("POST", "/__sandbox/aps/projects", "admin.aps.projects")
def add_project(req: Request) -> None:
    data = body(req)
    hub, project = need(data, "hub"), need(data, "project")
    entry = {
        "name": str(data.get("name") or project),
        "container": str(data.get("container") or uuid.uuid4()),
        "folder": str(data.get("folder") or f"urn:adsk.wipprod:fs.folder:co.{uuid.uuid4().hex[:22]}"),
    }
    with req.store.lock:
        req.store.projects[(hub, project)] = entry
    raise Reply(201, entry)


@route("POST", "/__sandbox/aps/rfis", "admin.aps.rfis")
def add_rfi(req: Request) -> None:
    data = body(req)
    with req.store.lock:
        req.store.rfis.setdefault((need(data, "container"), need(data, "rfi")), {})
    raise Reply(201, data)


@route("POST", "/__sandbox/tokens/revoke", "admin.tokens.revoke")
def revoke(req: Request) -> None:
    data = body(req)
    with req.store.lock:
        for token in [t for t in req.store.tokens if data.get("token") in (None, t)]:
            del req.store.tokens[token]
    raise Reply(204)


@route("POST", "/__sandbox/faults", "admin.faults")
def set_faults(req: Request) -> None:
    data = body(req)
    endpoint = need(data, "endpoint")
    faults: FaultInjector = req.h.server.faults  # type: ignore[attr-defined]
    try:
        faults.configure(endpoint, **{k: v for k, v in data.items() if k != "endpoint"})
    except (TypeError, ValueError) as exc:
        raise Reply(400, {"error": {"code": "BadAdminRequest", "message": str(exc)}}) from None
    raise Reply(204)


@route("DELETE", "/__sandbox/faults", "admin.faults.reset")
def clear_faults(req: Request) -> None:
    req.h.server.faults.reset()  # type: ignore[attr-defined]
    raise Reply(204)


@route("PUT", "/__sandbox/config", "admin.config")
def configure(req: Request) -> None:
    data = body(req)
    allowed = {"max_upload_bytes", "min_part_bytes", "location_base", "token_lifetime"}
    unknown = set(data) - allowed
    if unknown:
        raise Reply(400, {"error": {"code": "BadAdminRequest", "message": f"unknown settings {sorted(unknown)}"}})
    with req.store.lock:
        for key, value in data.items():
            setattr(req.store, key, value)
    raise Reply(204)


@route("GET", "/__sandbox/inspect", "admin.inspect")
def inspect(req: Request) -> None:
    raise Reply(200, req.store.inspect())


@route("POST", "/__sandbox/webhooks/send", "admin.webhooks.send")
def send(req: Request) -> None:
    data = body(req)
    content = data.get("content")
    if not isinstance(content, dict):
        raise Reply(400, {"error": {"code": "BadAdminRequest", "message": "'content' must be an object"}})
    status, text = send_webhook(need(data, "url"), need(data, "secret"), need(data, "eventType"), content)
    raise Reply(200, {"status": status, "body": text})


@route("GET", "/__sandbox/health", "admin.health")
def health(req: Request) -> None:
    raise Reply(200, {"ok": True})
