"""Admin endpoints under /__sandbox/: seed data, switch faults, configure limits, inspect what exists."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import requests

from sandbox.core import Failure, Reply, Request, Router, generic_error
from sandbox.webhooks import send_webhook


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)  # any text: a hostile base need not be a well-formed URL


# PUT /__sandbox/config: each setting and the values it takes.
CONFIG: dict[str, Callable[[Any], bool]] = {
    "max_upload_bytes": _int,
    "min_part_bytes": _int,
    "token_lifetime": _int,
    "location_base": _text_or_none,
    "next_link_base": _text_or_none,
    "part_url_base": _text_or_none,
    "created_date_time": lambda value: True,  # any JSON value, so a client can meet a wrong one; null switches off
    "aps_user": lambda value: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
    "aps_consent": lambda value: value in ("allow", "deny"),
}


def error_body(endpoint: str, failure: Failure) -> Any:
    return generic_error(
        failure.code or "BadAdminRequest", failure.message or f"Admin request failed ({failure.status})."
    )


def bad(message: str) -> Reply:
    return Reply(400, generic_error("BadAdminRequest", message))


def body(req: Request) -> dict[str, Any] | Reply:
    data = req.json()
    if not isinstance(data, dict):
        return bad("JSON object expected")
    return data


def need(data: dict[str, Any], *names: str) -> list[str] | Reply:
    """The named string fields, all present and non-empty, or the 400 naming the first that is not."""
    values = []
    for name in names:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            return bad(f"{name!r} is required")
        values.append(value)
    return values


def reset(req: Request) -> Reply:
    req.store.reset()
    req.faults.reset()
    return Reply(204)


def add_parent(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    fields = need(data, "id")
    if isinstance(fields, Reply):
        return fields
    with req.store.lock:
        table = req.store.issues if req.params["kind"] == "issues" else req.store.forms
        table.setdefault(fields[0], {})
    return Reply(201, {"id": fields[0]})


def add_client(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    fields = need(data, "platform", "client_id", "client_secret")
    if isinstance(fields, Reply):
        return fields
    platform, client_id, secret = fields
    if platform not in ("itwin", "aps"):
        return bad("platform is itwin or aps")
    with req.store.lock:
        req.store.clients[client_id] = {"secret": secret, "platform": platform}
    return Reply(201, {"client_id": client_id})


def grant_refresh(req: Request) -> Reply:
    """Stands in for the user's three-legged consent: hands out a first refresh token."""
    data = body(req)
    if isinstance(data, Reply):
        return data
    fields = need(data, "client_id")
    if isinstance(fields, Reply):
        return fields
    return Reply(201, {"refresh_token": req.store.issue_refresh_token(fields[0])})


def add_project(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    fields = need(data, "hub", "project")
    if isinstance(fields, Reply):
        return fields
    hub, project = fields
    with req.store.lock:
        # Posting a project again keeps its container and folder (unless named), so seeding twice, as
        # `python -m sandbox` and then the local stack do, leaves the ids the first seed printed valid.
        known = req.store.projects.get((hub, project), {})
        entry = {
            "name": str(data.get("name") or known.get("name") or project),
            "container": str(data.get("container") or known.get("container") or uuid.uuid4()),
            "folder": str(
                data.get("folder") or known.get("folder") or f"urn:adsk.wipprod:fs.folder:co.{uuid.uuid4().hex[:22]}"
            ),
        }
        if data.get("acc"):
            entry["container"] = ""  # an ACC project: no RFI container, as the RFI page warns
        req.store.projects[(hub, project)] = entry
    return Reply(201, entry)


def add_rfi(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    fields = need(data, "container", "rfi")
    if isinstance(fields, Reply):
        return fields
    with req.store.lock:
        req.store.rfis.setdefault((fields[0], fields[1]), {})
    return Reply(201, data)


def revoke(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    with req.store.lock:
        for token in [t for t in req.store.tokens if data.get("token") in (None, t)]:
            del req.store.tokens[token]
    return Reply(204)


def set_faults(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    fields = need(data, "endpoint")
    if isinstance(fields, Reply):
        return fields
    try:
        req.faults.configure(fields[0], **{k: v for k, v in data.items() if k != "endpoint"})
    except (TypeError, ValueError) as exc:
        return bad(str(exc))
    return Reply(204)


def clear_faults(req: Request) -> Reply:
    req.faults.reset()
    return Reply(204)


def configure(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    unknown = set(data) - set(CONFIG)
    if unknown:
        return bad(f"unknown settings {sorted(unknown)}")
    wrong = sorted(key for key, value in data.items() if not CONFIG[key](value))
    if wrong:
        return bad(f"bad values for {wrong}: sizes and lifetimes are positive integers, bases are strings or null")
    with req.store.lock:
        for key, value in data.items():
            setattr(req.store, key, value)
    return Reply(204)


def inspect(req: Request) -> Reply:
    return Reply(200, req.store.inspect())


def send(req: Request) -> Reply:
    data = body(req)
    if isinstance(data, Reply):
        return data
    fields = need(data, "url", "secret", "eventType")
    if isinstance(fields, Reply):
        return fields
    content = data.get("content")
    if not isinstance(content, dict):
        return bad("'content' must be an object")
    url, secret, event_type = fields
    try:
        status, text = send_webhook(url, secret, event_type, content)
    except requests.RequestException as exc:
        return Reply(502, generic_error("WebhookDeliveryFailed", f"{type(exc).__name__} posting to {url}"))
    return Reply(200, {"status": status, "body": text})


def health(req: Request) -> Reply:
    return Reply(200, {"ok": True})


def register(router: Router) -> None:
    """Add the admin endpoints; faults never apply to them."""
    for method, pattern, endpoint, handler in (
        ("POST", "/__sandbox/reset", "admin.reset", reset),
        ("POST", "/__sandbox/itwin/(?P<kind>issues|forms)", "admin.itwin.parent", add_parent),
        ("POST", "/__sandbox/clients", "admin.clients", add_client),
        ("POST", "/__sandbox/aps/refresh-tokens", "admin.aps.refresh", grant_refresh),
        ("POST", "/__sandbox/aps/projects", "admin.aps.projects", add_project),
        ("POST", "/__sandbox/aps/rfis", "admin.aps.rfis", add_rfi),
        ("POST", "/__sandbox/tokens/revoke", "admin.tokens.revoke", revoke),
        ("POST", "/__sandbox/faults", "admin.faults", set_faults),
        ("DELETE", "/__sandbox/faults", "admin.faults.reset", clear_faults),
        ("PUT", "/__sandbox/config", "admin.config", configure),
        ("GET", "/__sandbox/inspect", "admin.inspect", inspect),
        ("POST", "/__sandbox/webhooks/send", "admin.webhooks.send", send),
        ("GET", "/__sandbox/health", "admin.health", health),
    ):
        router.add(method, pattern, endpoint, handler, error_body=error_body, injectable=False)
