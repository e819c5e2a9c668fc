"""Autodesk APS endpoints: rotating tokens, projects, Data Management uploads, RFI attachments, and their errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any
from urllib.parse import quote, urlencode

from sandbox.core import Failure, Reply, Request, Router, oauth_error_body
from sandbox.store import ApsItem, ApsUpload, RfiAttachment, now_iso

MAX_URLS = 25
SIGNING_KEY = uuid.uuid4().bytes


def error(status: int, message: str, code: str | None = None) -> Reply:
    return Reply(status, {"developerMessage": message, "errorCode": code or f"HTTP{status}"})


def error_body(endpoint: str, failure: Failure) -> Any:
    """APS's `{developerMessage, errorCode}` for an injected or plumbing error."""
    if failure.code:
        return {"developerMessage": failure.message or f"Injected {failure.code}.", "errorCode": failure.code}
    if failure.status == 429:
        return {"developerMessage": failure.message or "Too many requests; retry later.", "errorCode": "RateLimited"}
    return {
        "developerMessage": failure.message or f"Injected fault {failure.status}.",
        "errorCode": f"HTTP{failure.status}",
    }


S3_ERROR = "<Error><Code>{}</Code><Message>{}</Message></Error>"


def s3_error_body(endpoint: str, failure: Failure) -> Any:
    """The pre-signed part URLs are S3's: its errors are XML."""
    code = failure.code or ("SlowDown" if failure.status == 429 else f"HTTP{failure.status}")
    return S3_ERROR.format(code, failure.message or f"Injected fault {failure.status}.").encode()


def require_bearer(req: Request) -> Reply | None:
    token = req.bearer()
    if token is None:
        return error(401, "The authorization header is missing.", "AUTH-001")
    if not token or not req.store.token_valid(token, "aps"):
        return error(401, "The token is invalid or expired.", "AUTH-006")
    return None


def oauth(status: int, code: str, description: str) -> Reply:
    return Reply(status, {"error": code, "error_description": description})


def s256(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def authorize(req: Request) -> Reply:
    """The three-legged sign-in page, without a person: the configured user signs in (or refuses) at once, and
    the browser is redirected to `redirect_uri` with a one-time code bound to the PKCE challenge."""
    q = {name: req.arg(name) or "" for name in ("response_type", "client_id", "redirect_uri", "scope", "state")}
    challenge, method = req.arg("code_challenge") or "", req.arg("code_challenge_method") or ""
    client = req.store.clients.get(q["client_id"])
    if client is None or client["platform"] != "aps" or not q["redirect_uri"].startswith(("http://", "https://")):
        # Never redirect to an unvetted URI: the page answers the error itself.
        return Reply(400, {"developerMessage": "Unknown client_id or bad redirect_uri.", "errorCode": "AUTH-001"})
    sep = "&" if "?" in q["redirect_uri"] else "?"

    def back(**params: str) -> Reply:
        return Reply(302, None, [("Location", q["redirect_uri"] + sep + urlencode({**params, "state": q["state"]}))])

    if q["response_type"] != "code":
        return back(error="unsupported_response_type")
    if method != "S256" or not 43 <= len(challenge) <= 128:
        return back(error="invalid_request", error_description="PKCE code_challenge with S256 is required")
    if req.store.aps_consent == "deny":
        return back(error="access_denied", error_description="The user denied access.")
    code = "sbx-code-" + secrets.token_urlsafe(24)
    with req.store.lock:
        req.store.auth_codes[code] = {
            "client_id": q["client_id"],
            "redirect_uri": q["redirect_uri"],
            "scope": q["scope"],
            "challenge": challenge,
            "user": dict(req.store.aps_user),
            "expires": time.time() + 300,
        }
    return back(code=code)


def issue_pair(req: Request, client_id: str, user: dict[str, str], scope: str) -> Reply:
    access, lifetime = req.store.issue_token("aps")
    refresh = req.store.issue_refresh_token(client_id)
    with req.store.lock:
        req.store.token_users[access] = req.store.token_users[refresh] = {**user, "scope": scope}
    body = {"access_token": access, "refresh_token": refresh, "expires_in": lifetime, "token_type": "Bearer"}
    return Reply(200, {**body, "scope": scope} if scope else body)


def token(req: Request) -> Reply:
    form = req.form()
    basic = req.basic()
    client_id, secret = basic if basic else (form.get("client_id", ""), form.get("client_secret", ""))
    client = req.store.clients.get(client_id)
    if client is None or client["secret"] != secret or client["platform"] != "aps":
        return oauth(401, "invalid_client", "The client credentials are invalid.")
    grant = form.get("grant_type")
    if grant == "authorization_code":
        with req.store.lock:
            issued = req.store.auth_codes.pop(form.get("code", ""), None)  # a code works once
        if (
            issued is None
            or issued["client_id"] != client_id
            or issued["expires"] < time.time()
            or issued["redirect_uri"] != form.get("redirect_uri")
            or not hmac.compare_digest(issued["challenge"], s256(form.get("code_verifier", "")))
        ):
            return oauth(400, "invalid_grant", "The code is invalid, used, expired, or its code_verifier is wrong.")
        return issue_pair(req, client_id, issued["user"], issued["scope"])
    if grant != "refresh_token":
        return oauth(400, "unsupported_grant_type", "Use authorization_code or refresh_token.")
    presented = form.get("refresh_token", "")
    with req.store.lock:
        owner = req.store.refresh_tokens.pop(presented, None)
        if owner != client_id:
            # Every refresh rotates the refresh token: a used (or unknown) one is refused.
            return oauth(400, "invalid_grant", "The refresh token is invalid or used.")
        req.store.used_refresh_tokens.add(presented)
        user = req.store.token_users.pop(presented, {**req.store.aps_user, "scope": ""})
    scope = user.pop("scope", "")
    return issue_pair(req, client_id, user, scope)


def userinfo(req: Request) -> Reply:
    """OpenID Connect userinfo for the token's user (APS serves it at api.userprofile.autodesk.com/userinfo)."""
    if denied := require_bearer(req):
        return denied
    with req.store.lock:
        user = dict(req.store.token_users.get(req.bearer() or "", req.store.aps_user))
    user.pop("scope", None)
    return Reply(200, {**user, "preferred_username": user.get("email", "")})


def project(req: Request) -> dict[str, str] | Reply:
    found = req.store.projects.get((req.params["hub"], req.params["project"]))
    if found is None:
        return error(404, "Project not found.", "NOT_FOUND")
    return found


def get_project(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    p = project(req)
    if isinstance(p, Reply):
        return p
    return Reply(
        200,
        {
            "jsonapi": {"version": "1.0"},
            "data": {
                "type": "projects",
                "id": req.params["project"],
                "attributes": {"name": p["name"]},
                "relationships": {
                    "rootFolder": {"data": {"type": "folders", "id": p["folder"]}},
                    **({"rfis": {"data": {"type": "rfis", "id": p["container"]}}} if p["container"] else {}),
                },
            },
        },
    )


def top_folders(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    p = project(req)
    if isinstance(p, Reply):
        return p
    attributes = {"name": "Project Files", "displayName": "Project Files"}
    return Reply(200, {"data": [{"type": "folders", "id": p["folder"], "attributes": attributes}]})


def folder_contents(req: Request) -> Reply:
    """The folder's items, each with its tip version (and the tip's storage object) in `included`; paged."""
    if denied := require_bearer(req):
        return denied
    try:
        number = int(req.arg("page[number]", "0") or 0)
        limit = int(req.arg("page[limit]", "200") or 200)
    except ValueError:
        return error(400, "page[number] and page[limit] must be integers.", "BAD_INPUT")
    if number < 0 or not 1 <= limit <= 200:
        return error(400, "page[number] must be >= 0 and page[limit] 1..200.", "BAD_INPUT")
    project_id, folder = req.params["project"], req.params["folder"]
    with req.store.lock:
        if folder not in project_folders(req, project_id):
            return error(404, "Folder not found.", "NOT_FOUND")
        items = [i for i in req.store.items.values() if i.folder_id == folder and i.project_id == project_id]
        page = items[number * limit : (number + 1) * limit]
        data, included = [], []
        for item in page:
            tip = version_body(item, len(item.versions))
            data.append(
                {
                    "type": "items",
                    "id": item.id,
                    "attributes": {"displayName": item.name},
                    "relationships": {"tip": {"data": {"type": "versions", "id": tip["id"]}}},
                }
            )
            storage = f"urn:adsk.objects:os.object:{item.versions[-1]}"
            included.append({**tip, "relationships": {"storage": {"data": {"type": "objects", "id": storage}}}})
    body: dict[str, Any] = {"jsonapi": {"version": "1.0"}, "data": data, "included": included, "links": {}}
    if (number + 1) * limit < len(items):
        query = urlencode({"page[number]": number + 1, "page[limit]": limit})
        body["links"]["next"] = {
            "href": f"{req.base_url}/data/v1/projects/{quote(project_id)}/folders/{quote(folder)}/contents?{query}"
        }
    return Reply(200, body)


def jsonapi_data(req: Request) -> tuple[dict[str, Any], Any] | Reply:
    body = req.json()
    # Data Management's documented type; plain application/json is not it (BRIEF, "Data Management speaks JSON:API").
    if "application/vnd.api+json" not in (req.headers.get("Content-Type") or ""):
        return error(400, "Content-Type must be application/vnd.api+json.", "BAD_INPUT")
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        return error(400, "Request body must be a JSON:API document with a data object.", "BAD_INPUT")
    return body["data"], body.get("included")


def folder_of(data: dict[str, Any], relation: str) -> str | Reply:
    try:
        return str(data["relationships"][relation]["data"]["id"])
    except (KeyError, TypeError):
        return error(400, f"data.relationships.{relation}.data.id is required.", "BAD_INPUT")


def project_folders(req: Request, project_id: str) -> set[str]:
    return {p["folder"] for (_, pid), p in req.store.projects.items() if pid == project_id}


def create_storage(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    parsed = jsonapi_data(req)
    if isinstance(parsed, Reply):
        return parsed
    data, _ = parsed
    name = (data.get("attributes") or {}).get("name")
    if data.get("type") != "objects" or not isinstance(name, str) or not name:
        return error(400, "data.type must be objects and data.attributes.name is required.", "BAD_INPUT")
    folder = folder_of(data, "target")
    if isinstance(folder, Reply):
        return folder
    if folder not in project_folders(req, req.params["project"]):
        return error(404, "Target folder not found.", "NOT_FOUND")
    object_key = f"{uuid.uuid4()}{'.' + name.rsplit('.', 1)[1] if '.' in name else ''}"
    with req.store.lock:
        req.store.storage_targets[f"wip.dm.prod/{object_key}"] = folder
    return Reply(201, {"data": {"type": "objects", "id": f"urn:adsk.objects:os.object:wip.dm.prod/{object_key}"}})


def sign(upload_key: str, part: int, expires: int) -> str:
    return hmac.new(SIGNING_KEY, f"{upload_key}:{part}:{expires}".encode(), hashlib.sha256).hexdigest()


def signed_urls(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    full = f"{req.params['bucket']}/{req.params['object']}"
    if full not in req.store.storage_targets:
        return error(404, "Object storage location not found; create it with POST storage first.", "NOT_FOUND")
    try:
        parts = int(req.arg("parts", "1") or 1)
        first = int(req.arg("firstPart", "1") or 1)
        minutes = int(req.arg("minutesExpiration", "2") or 2)
    except ValueError:
        return error(400, "parts, firstPart and minutesExpiration must be integers.", "BAD_INPUT")
    if not 1 <= parts <= MAX_URLS or first < 1 or first + parts - 1 > 10000 or not 1 <= minutes <= 60:
        return error(400, f"parts must be 1..{MAX_URLS}, firstPart >= 1, minutesExpiration 1..60.", "BAD_INPUT")
    upload_key = req.arg("uploadKey")
    with req.store.lock:
        if upload_key is None:
            upload_key = uuid.uuid4().hex + uuid.uuid4().hex
            req.store.uploads[upload_key] = ApsUpload(req.params["bucket"], req.params["object"], upload_key)
        elif upload_key not in req.store.uploads:
            return error(400, "Unknown uploadKey.", "BAD_INPUT")
    expires = int(time.time()) + minutes * 60
    urls = [
        f"{req.base_url}/__s3/{upload_key}/{n}?X-Amz-Expires={expires}&X-Amz-Signature={sign(upload_key, n, expires)}"
        for n in range(first, first + parts)
    ]
    url_expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    upload_expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 24 * 3600))
    return Reply(
        200,
        {"uploadKey": upload_key, "uploadExpiration": upload_expiration, "urlExpiration": url_expiration, "urls": urls},
    )


def s3_error(status: int, code: str, message: str) -> Reply:
    return Reply(status, S3_ERROR.format(code, message).encode())


def put_part(req: Request) -> Reply:
    if "Authorization" in req.headers:
        return s3_error(400, "InvalidArgument", "Only one auth mechanism allowed.")
    part = int(req.params["part"])
    try:
        expires = int(req.arg("X-Amz-Expires", "0") or 0)
    except ValueError:
        expires = 0
    if not hmac.compare_digest(req.arg("X-Amz-Signature", "") or "", sign(req.params["key"], part, expires)):
        return s3_error(403, "SignatureDoesNotMatch", "Bad signature.")
    if expires < time.time():
        return s3_error(403, "AccessDenied", "Request has expired")
    with req.store.lock:
        upload = req.store.uploads.get(req.params["key"])
    if upload is None:
        return s3_error(404, "NoSuchUpload", "Upload not found.")
    stored = req.store.write_stream(req.chunks(), 5 * 1024 * 1024 * 1024)
    if stored is None:
        return s3_error(400, "EntityTooLarge", "Part too large.")
    with req.store.lock:
        req.store.discard(upload.parts.get(part))
        upload.parts[part] = stored
    return Reply(200, None, [("ETag", f'"{stored.sha256[:32]}"')])


def complete(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    body = req.json()
    upload_key = body.get("uploadKey") if isinstance(body, dict) else None
    with req.store.lock:
        upload = req.store.uploads.get(upload_key or "")
        if upload is None or (upload.bucket_key, upload.object_key) != (req.params["bucket"], req.params["object"]):
            return error(400, "uploadKey is missing or does not match this object.", "BAD_INPUT")
        numbers = sorted(upload.parts)
        if not numbers or numbers != list(range(1, len(numbers) + 1)):
            return error(400, "Parts must be uploaded contiguously from 1.", "BAD_INPUT")
        small = [n for n in numbers[:-1] if upload.parts[n].size < req.store.min_part_bytes]
        if small:
            return error(
                400, f"Part {small[0]} is smaller than the {req.store.min_part_bytes} byte minimum.", "EntityTooSmall"
            )
        parts = [upload.parts[n] for n in numbers]
        del req.store.uploads[upload.upload_key]
    stored = req.store.concat(parts)
    for part in parts:
        req.store.discard(part)
    full = f"{upload.bucket_key}/{upload.object_key}"
    with req.store.lock:
        req.store.discard(req.store.objects.get(full))
        req.store.objects[full] = stored
    return Reply(
        200,
        {
            "bucketKey": upload.bucket_key,
            "objectId": f"urn:adsk.objects:os.object:{full}",
            "objectKey": upload.object_key,
            "size": stored.size,
            "contentType": "application/octet-stream",
            "location": f"{req.base_url}/oss/v2/buckets/{upload.bucket_key}/objects/{quote(upload.object_key)}",
        },
    )


def item_versions(req: Request) -> Reply:
    """An item's versions, newest first, each naming its storage object (one page: the sandbox's are short)."""
    if denied := require_bearer(req):
        return denied
    with req.store.lock:
        item = req.store.items.get(req.params["item"])
        if item is None or item.project_id != req.params["project"]:
            return error(404, "Item not found.", "NOT_FOUND")
        data = [
            {
                **version_body(item, number),
                "relationships": {
                    "storage": {"data": {"type": "objects", "id": f"urn:adsk.objects:os.object:{key}"}},
                },
            }
            for number, key in reversed(list(enumerate(item.versions, start=1)))
        ]
    return Reply(200, {"jsonapi": {"version": "1.0"}, "data": data, "links": {}})


def storage_object(req: Request, object_id: Any) -> str | Reply:
    prefix = "urn:adsk.objects:os.object:"
    key = object_id[len(prefix) :] if isinstance(object_id, str) and object_id.startswith(prefix) else None
    if key is None or key not in req.store.objects:
        return error(400, "The storage object does not exist or its upload was not completed.", "BAD_INPUT")
    return key


def version_body(item: ApsItem, number: int) -> dict[str, Any]:
    return {
        "type": "versions",
        "id": f"urn:adsk.wipprod:fs.file:vf.{item.id.rsplit(':', 1)[-1]}?version={number}",
        "attributes": {"name": item.name, "versionNumber": number},
    }


def create_item(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    parsed = jsonapi_data(req)
    if isinstance(parsed, Reply):
        return parsed
    data, included = parsed
    name = (data.get("attributes") or {}).get("displayName")
    folder = folder_of(data, "parent")
    if isinstance(folder, Reply):
        return folder
    try:
        version = included[0]
        object_id = version["relationships"]["storage"]["data"]["id"]
    except (TypeError, KeyError, IndexError):
        return error(400, "included[0] must be a version with relationships.storage.data.id.", "BAD_INPUT")
    if not isinstance(name, str) or not name:
        return error(400, "data.attributes.displayName is required.", "BAD_INPUT")
    with req.store.lock:
        if folder not in project_folders(req, req.params["project"]):
            return error(404, "Parent folder not found.", "NOT_FOUND")
        key = storage_object(req, object_id)
        if isinstance(key, Reply):
            return key
        if any(i.folder_id == folder and i.name == name for i in req.store.items.values()):
            return error(409, f"An item named {name!r} already exists in this folder; create a version.", "CONFLICT")
        item = ApsItem(
            f"urn:adsk.wipprod:dm.lineage:{uuid.uuid4().hex[:22]}", req.params["project"], folder, name, [key]
        )
        req.store.items[item.id] = item
    return Reply(
        201,
        {
            "data": {"type": "items", "id": item.id, "attributes": {"displayName": name}},
            "included": [version_body(item, 1)],
        },
    )


def create_version(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    parsed = jsonapi_data(req)
    if isinstance(parsed, Reply):
        return parsed
    data, _ = parsed
    try:
        item_id = data["relationships"]["item"]["data"]["id"]
        object_id = data["relationships"]["storage"]["data"]["id"]
    except (KeyError, TypeError):
        return error(400, "relationships.item and relationships.storage are required.", "BAD_INPUT")
    with req.store.lock:
        item = req.store.items.get(item_id)
        if item is None or item.project_id != req.params["project"]:
            return error(404, "Item not found.", "NOT_FOUND")
        key = storage_object(req, object_id)
        if isinstance(key, Reply):
            return key
        item.versions.append(key)
        number = len(item.versions)
    return Reply(201, {"data": version_body(item, number)})


def rfi(req: Request) -> dict[str, RfiAttachment] | Reply:
    found = req.store.rfis.get((req.params["container"], req.params["rfi"]))
    if found is None:
        return error(404, "RFI not found.", "NOT_FOUND")
    return found


def rfi_body(att: RfiAttachment) -> dict[str, Any]:
    return {
        "id": att.id,
        "rfiId": att.rfi_id,
        "createdAt": att.created_at,
        "updatedAt": att.created_at,
        "createdBy": "SANDBOXUSER",
        "name": att.name,
        "url": None,
        "urn": att.urn,
        "urnType": "dm",
        "attachmentType": "document",
        "permittedActions": {"removeAttachment": True},
    }


def attach(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    if "application/json" not in (req.headers.get("Content-Type") or ""):
        return error(400, "Content-Type must be application/json.", "BAD_INPUT")
    body = req.json()
    if not isinstance(body, dict):
        return error(400, "The body must be a JSON object.", "BAD_INPUT")
    name, urn, urn_type = body.get("name"), body.get("urn"), body.get("urnType")
    if not isinstance(name, str) or not name or len(name) > 400:
        return error(400, "name is required and at most 400 characters.", "BAD_INPUT")
    if urn_type != "dm":
        return error(400, "urnType must be dm.", "BAD_INPUT")
    if not isinstance(urn, str) or len(urn) > 400:
        return error(400, "urn is required and at most 400 characters.", "BAD_INPUT")
    with req.store.lock:
        atts = rfi(req)
        if isinstance(atts, Reply):
            return atts
        if urn not in req.store.items:
            return error(400, "urn does not name a Document Management item.", "BAD_INPUT")
        att = RfiAttachment(str(uuid.uuid4()), req.params["rfi"], name, urn, now_iso())
        atts[att.id] = att
    return Reply(201, rfi_body(att))


def list_rfi(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    try:
        limit = int(req.arg("limit", "10") or 10)
        offset = int(req.arg("offset", "0") or 0)
    except ValueError:
        return error(400, "limit and offset must be integers.", "BAD_INPUT")
    if not 1 <= limit <= 200 or offset < 0:
        return error(400, "limit must be 1..200 and offset >= 0.", "BAD_INPUT")
    with req.store.lock:
        atts = rfi(req)
        if isinstance(atts, Reply):
            return atts
        everything = list(atts.values())
    page = [rfi_body(a) for a in everything[offset : offset + limit]]
    return Reply(
        200, {"pagination": {"limit": limit, "offset": offset, "totalResults": len(everything)}, "results": page}
    )


def delete_rfi(req: Request) -> Reply:
    if denied := require_bearer(req):
        return denied
    with req.store.lock:
        atts = rfi(req)
        if isinstance(atts, Reply):
            return atts
        if atts.pop(req.params["att"], None) is None:
            return error(404, "Attachment not found.", "NOT_FOUND")
    return Reply(204)


PROJECT = r"/project/v1/hubs/(?P<hub>[^/]+)/projects/(?P<project>[^/]+)"
SIGNED = r"/oss/v2/buckets/(?P<bucket>[^/]+)/objects/(?P<object>[^/]+)/signeds3upload"
RFI = r"/bim360/rfis/v2/containers/(?P<container>[^/]+)/rfis/(?P<rfi>[^/]+)/attachments"


def register(router: Router) -> None:
    """Add the APS endpoints; the pre-signed part URLs answer faults in S3's XML, the rest in APS's JSON."""
    for method, pattern, endpoint, handler in (
        ("GET", "/authentication/v2/authorize", "aps.authorize", authorize),
        ("POST", "/authentication/v2/token", "aps.token", token),
        ("GET", "/userinfo", "aps.userinfo", userinfo),
        ("GET", PROJECT, "aps.project", get_project),
        ("GET", PROJECT + "/topFolders", "aps.topFolders", top_folders),
        ("POST", r"/data/v1/projects/(?P<project>[^/]+)/storage", "aps.storage", create_storage),
        (
            "GET",
            r"/data/v1/projects/(?P<project>[^/]+)/folders/(?P<folder>[^/]+)/contents",
            "aps.folder",
            folder_contents,
        ),
        ("GET", SIGNED, "aps.signeds3upload", signed_urls),
        ("POST", SIGNED, "aps.complete", complete),
        ("POST", r"/data/v1/projects/(?P<project>[^/]+)/items", "aps.items", create_item),
        ("POST", r"/data/v1/projects/(?P<project>[^/]+)/versions", "aps.versions", create_version),
        (
            "GET",
            r"/data/v1/projects/(?P<project>[^/]+)/items/(?P<item>[^/]+)/versions",
            "aps.itemVersions",
            item_versions,
        ),
        ("POST", RFI, "aps.rfi.attach", attach),
        ("GET", RFI, "aps.rfi.list", list_rfi),
        ("DELETE", RFI + r"/(?P<att>[^/]+)", "aps.rfi.delete", delete_rfi),
    ):
        shape = oauth_error_body if endpoint == "aps.token" else error_body
        router.add(method, pattern, endpoint, handler, error_body=shape)
    router.add("PUT", r"/__s3/(?P<key>[^/]+)/(?P<part>\d+)", "aps.s3part", put_part, error_body=s3_error_body)
