"""Bentley iTwin endpoints: ims client-credentials tokens, issue and form attachments, and iTwin's error body."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sandbox.core import Failure, Reply, Request, Router, guess_type, oauth_error_body
from sandbox.store import ITwinAttachment, new_attachment_id, now_iso

PAGE = 50
KINDS = {
    "issues": ("IssueNotFound", "Requested issue is not available."),
    "forms": ("FormDataNotFound", "Requested form data is not available."),
}
# The 429 bodies of the Issues (000) and Forms (001) pages differ.
RATE_LIMITED = {
    "issues": (
        "RateLimitExceeded",
        "The client sent more requests than allowed by this API for the current tier of the client.",
    ),
    "forms": ("TooManyRequests", "More requests were received than the subscription rate-limit allows."),
}


def error(code: str, message: str, target: str | None = None, details: list[dict[str, Any]] | None = None) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        body["target"] = target
    if details is not None:
        body["details"] = details
    return {"error": body}


def error_body(endpoint: str, failure: Failure) -> Any:
    """iTwin's `{"error": {code, message, details?}}` for an injected or plumbing error on `endpoint`."""
    if failure.code:
        return error(failure.code, failure.message or f"Injected {failure.code}.", details=failure.details)
    if failure.status == 429:
        code, message = RATE_LIMITED["forms" if endpoint.startswith("itwin.forms") else "issues"]
        return error(code, failure.message or message)
    code = "InternalServerError" if failure.status >= 500 else "InjectedFault"
    return error(code, failure.message or f"Injected fault {failure.status}.")


def require_bearer(req: Request) -> Reply | None:
    token = req.bearer()
    if token is None:
        return Reply(401, error("HeaderNotFound", "Header Authorization was not found in the request. Access denied."))
    if not token or not req.store.token_valid(token, "itwin"):
        return Reply(401, error("InvalidToken", "Access token is invalid or expired. Access denied."))
    return None


def table(req: Request) -> dict[str, dict[str, ITwinAttachment]]:
    return req.store.issues if req.params["kind"] == "issues" else req.store.forms


def parent(req: Request) -> dict[str, ITwinAttachment] | Reply:
    kind = req.params["kind"]
    found = table(req).get(req.params["id"])
    if found is None:
        code, message = KINDS[kind]
        return Reply(404, error(code, message, "id"))
    return found


def attachment(req: Request) -> ITwinAttachment | Reply:
    atts = parent(req)
    if isinstance(atts, Reply):
        return atts
    found = atts.get(req.params["att"])
    if found is None:
        return Reply(404, error("AttachmentNotFound", "Requested attachment is not available.", "attachmentId"))
    return found


def invalid(detail: dict[str, str]) -> Reply:
    return Reply(422, error("InvalidAttachmentRequest", "Cannot create attachment.", details=[detail]))


def token(req: Request) -> Reply:
    form = req.form()
    if form.get("grant_type") != "client_credentials":
        return Reply(400, {"error": "unsupported_grant_type"})
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    basic = req.basic()
    if basic:
        client_id, secret = basic
    client = req.store.clients.get(client_id)
    if client is None or client["secret"] != secret or client["platform"] != "itwin":
        return Reply(400, {"error": "invalid_client"})
    if "itwin-platform" not in form.get("scope", "").split():
        return Reply(400, {"error": "invalid_scope"})
    access, lifetime = req.store.issue_token("itwin")
    return Reply(
        200, {"access_token": access, "expires_in": lifetime, "token_type": "Bearer", "scope": "itwin-platform"}
    )


def create(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    body = req.json()
    with req.store.lock:
        atts = parent(req)
        if isinstance(atts, Reply):
            return atts
        name = body.get("fileName") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            return invalid(
                {
                    "code": "MissingRequiredProperty",
                    "message": "Required property is missing. The request must include a valid 'fileName' property.",
                    "target": "fileName",
                }
            )
        optional = {k: body.get(k) for k in ("caption", "binding")}
        for key, value in optional.items():
            if value is not None and not isinstance(value, str):
                return invalid({"code": "InvalidValue", "message": f"'{key}' must be a string.", "target": key})
        att = ITwinAttachment(new_attachment_id(), name, optional["caption"], optional["binding"], now_iso())
        atts[att.id] = att
        base = req.store.location_base or req.base_url
    kind, pid = req.params["kind"], req.params["id"]
    return Reply(201, None, [("Location", f"{base}/{kind}/{quote(pid, safe='')}/attachments/{att.id}")])


def upload(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    with req.store.lock:
        att = attachment(req)
        limit = req.store.max_upload_bytes
    if isinstance(att, Reply):
        return att
    length = req.content_length()
    too_large = Reply(413, error("RequestTooLarge", f"Request body exceeds the {limit} byte limit."))
    if length is not None and length > limit:
        return too_large
    stored = req.store.write_stream(req.chunks(), limit)
    if stored is None:
        return too_large
    with req.store.lock:
        if attachment(req) is not att:  # deleted while uploading
            req.store.discard(stored)
            return Reply(404, error("AttachmentNotFound", "Requested attachment is not available.", "attachmentId"))
        previous, att.file = att.file, stored
        att.uploads += 1
    req.store.discard(previous)
    return Reply(201)


def list_attachments(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    try:
        top = min(int(req.arg("$top", str(PAGE)) or PAGE), PAGE)
        start = int(req.arg("continuationToken", "0") or 0)
    except ValueError:
        return Reply(422, error("InvalidRequest", "Invalid $top or continuationToken."))
    with req.store.lock:
        atts = parent(req)
        if isinstance(atts, Reply):
            return atts
        # Creation order: a stable sort keeps it for attachments created in the same millisecond.
        everything = sorted(atts.values(), key=lambda a: a.createdDateTime)
        page = [a.metadata() for a in everything[start : start + top]]
        created, links_base = req.store.created_date_time, req.store.next_link_base
    if created is not None:
        # Config `created_date_time`: every listed attachment claims this value, so a client's parsing of
        # odd or fixed timestamps can be tested; stored times (and inspect) stay real.
        page = [{**a, "createdDateTime": created} for a in page]
    body: dict[str, Any] = {"attachments": page}
    if start + top < len(everything):
        kind, pid = req.params["kind"], quote(req.params["id"], safe="")
        base = links_base or req.base_url
        body["_links"] = {
            "next": {"href": f"{base}/{kind}/{pid}/attachments?$top={top}&continuationToken={start + top}"}
        }
    return Reply(200, body)


def download(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    with req.store.lock:
        att = attachment(req)
        stored = None if isinstance(att, Reply) else att.file
    if isinstance(att, Reply):
        return att
    if stored is None:
        return Reply(404, error("FileNotFound", "The attachment has no uploaded file.", "attachmentId"))
    return Reply(200, headers=[("Content-Type", guess_type(att.fileName))], file=stored)


def delete(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    with req.store.lock:
        att = attachment(req)
        if isinstance(att, Reply):
            return att
        del table(req)[req.params["id"]][att.id]
    req.store.discard(att.file)
    return Reply(204)


ATT = r"/(?P<kind>issues|forms)/(?P<id>[^/]+)/attachments"


def register(router: Router) -> None:
    """Add the iTwin endpoints; their faults and plumbing errors answer in iTwin's error shape."""
    for method, pattern, endpoint, handler in (
        ("POST", "/connect/token", "itwin.token", token),
        ("POST", ATT, "itwin.{kind}.create", create),
        ("PUT", ATT + r"/(?P<att>[^/]+)", "itwin.{kind}.upload", upload),
        ("GET", ATT, "itwin.{kind}.list", list_attachments),
        ("GET", ATT + r"/(?P<att>[^/]+)", "itwin.{kind}.download", download),
        ("DELETE", ATT + r"/(?P<att>[^/]+)", "itwin.{kind}.delete", delete),
    ):
        shape = oauth_error_body if endpoint == "itwin.token" else error_body
        router.add(method, pattern, endpoint, handler, error_body=shape)
