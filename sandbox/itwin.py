"""Bentley iTwin endpoints: ims client-credentials tokens, issue and form attachments."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sandbox.core import Reply, Request, guess_type, route
from sandbox.store import ITwinAttachment, new_attachment_id, now_iso

PAGE = 50
KINDS = {
    "issues": ("IssueNotFound", "Requested issue is not available."),
    "forms": ("FormDataNotFound", "Requested form data is not available."),
}


def error(code: str, message: str, target: str | None = None, details: list[dict[str, Any]] | None = None) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        body["target"] = target
    if details is not None:
        body["details"] = details
    return {"error": body}


def require_bearer(req: Request) -> None:
    token = req.bearer()
    if token is None:
        raise Reply(401, error("HeaderNotFound", "Header Authorization was not found in the request. Access denied."))
    if not token or not req.store.token_valid(token, "itwin"):
        raise Reply(401, error("InvalidToken", "Access token is invalid or expired. Access denied."))


def parent(req: Request) -> dict[str, ITwinAttachment]:
    kind = req.params["kind"]
    table = req.store.issues if kind == "issues" else req.store.forms
    found = table.get(req.params["id"])
    if found is None:
        code, message = KINDS[kind]
        raise Reply(404, error(code, message, "id"))
    return found


def attachment(req: Request) -> ITwinAttachment:
    found = parent(req).get(req.params["att"])
    if found is None:
        raise Reply(404, error("AttachmentNotFound", "Requested attachment is not available.", "attachmentId"))
    return found


ATT = r"/(?P<kind>issues|forms)/(?P<id>[^/]+)/attachments"


@route("POST", "/connect/token", "itwin.token")
def token(req: Request) -> None:
    form = req.form()
    if form.get("grant_type") != "client_credentials":
        raise Reply(400, {"error": "unsupported_grant_type"})
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    basic = req.basic()
    if basic:
        client_id, secret = basic
    client = req.store.clients.get(client_id)
    if client is None or client["secret"] != secret or client["platform"] != "itwin":
        raise Reply(400, {"error": "invalid_client"})
    if "itwin-platform" not in form.get("scope", "").split():
        raise Reply(400, {"error": "invalid_scope"})
    access, lifetime = req.store.issue_token("itwin")
    raise Reply(
        200, {"access_token": access, "expires_in": lifetime, "token_type": "Bearer", "scope": "itwin-platform"}
    )


@route("POST", ATT, "itwin.{kind}.create")
def create(req: Request) -> None:
    require_bearer(req)
    body = req.json()
    with req.store.lock:
        atts = parent(req)
        name = body.get("fileName") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise Reply(
                422,
                error(
                    "InvalidAttachmentRequest",
                    "Cannot create attachment.",
                    details=[
                        {
                            "code": "MissingRequiredProperty",
                            "message": (
                                "Required property is missing. The request must include a valid 'fileName' property."
                            ),
                            "target": "fileName",
                        }
                    ],
                ),
            )
        optional = {k: body.get(k) for k in ("caption", "binding")}
        for key, value in optional.items():
            if value is not None and not isinstance(value, str):
                raise Reply(
                    422,
                    error(
                        "InvalidAttachmentRequest",
                        "Cannot create attachment.",
                        details=[{"code": "InvalidValue", "message": f"'{key}' must be a string.", "target": key}],
                    ),
                )
        att = ITwinAttachment(new_attachment_id(), name, optional["caption"], optional["binding"], now_iso())
        atts[att.id] = att
        base = req.store.location_base or req.base_url
    kind, pid = req.params["kind"], req.params["id"]
    location = f"{base}/{kind}/{quote(pid, safe='')}/attachments/{att.id}"
    raise Reply(201, None, {"Location": location})


@route("PUT", ATT + r"/(?P<att>[^/]+)", "itwin.{kind}.upload")
def upload(req: Request) -> None:
    require_bearer(req)
    with req.store.lock:
        att = attachment(req)
        limit = req.store.max_upload_bytes
    length = req.content_length()
    too_large = Reply(413, error("RequestTooLarge", f"Request body exceeds the {limit} byte limit."))
    if length is not None and length > limit:
        raise too_large
    stored = req.store.write_stream(req.chunks(), limit)
    if stored is None:
        raise too_large
    with req.store.lock:
        if attachment(req) is not att:  # deleted while uploading
            req.store.discard(stored)
            raise Reply(404, error("AttachmentNotFound", "Requested attachment is not available.", "attachmentId"))
        previous, att.file = att.file, stored
        att.uploads += 1
    req.store.discard(previous)
    raise Reply(201, None)


@route("GET", ATT, "itwin.{kind}.list")
def list_attachments(req: Request) -> None:
    require_bearer(req)
    try:
        top = min(int(req.arg("$top", str(PAGE)) or PAGE), PAGE)
        start = int(req.arg("continuationToken", "0") or 0)
    except ValueError:
        raise Reply(422, error("InvalidRequest", "Invalid $top or continuationToken.")) from None
    with req.store.lock:
        everything = sorted(parent(req).values(), key=lambda a: (a.createdDateTime, a.id))
        page = [a.metadata() for a in everything[start : start + top]]
    body: dict[str, Any] = {"attachments": page}
    if start + top < len(everything):
        kind, pid = req.params["kind"], quote(req.params["id"], safe="")
        body["_links"] = {
            "next": {"href": f"{req.base_url}/{kind}/{pid}/attachments?$top={top}&continuationToken={start + top}"}
        }
    raise Reply(200, body)


@route("GET", ATT + r"/(?P<att>[^/]+)", "itwin.{kind}.download")
def download(req: Request) -> None:
    require_bearer(req)
    with req.store.lock:
        att = attachment(req)
        stored = att.file
    if stored is None:
        raise Reply(404, error("FileNotFound", "The attachment has no uploaded file.", "attachmentId"))
    req.send_file(stored.path, stored.size, guess_type(att.fileName))


@route("DELETE", ATT + r"/(?P<att>[^/]+)", "itwin.{kind}.delete")
def delete(req: Request) -> None:
    require_bearer(req)
    with req.store.lock:
        att = attachment(req)
        del parent(req)[att.id]
    req.store.discard(att.file)
    raise Reply(204, None)
