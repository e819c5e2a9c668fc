"""Bentley iTwin Issues and Forms attachment client: it builds every iTwin URL and accepts only documented statuses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from relay.errors import (
    ErrorFields,
    MalformedResponseError,
    MissingLocationError,
    NotFoundError,
    VendorError,
    generic_error_fields,
)
from relay.transport.requestor import BodyFactory, Requestor, Response
from relay.transport.retry import Deadline

ITWIN_ACCEPT = "application/vnd.bentley.itwin-platform.v1+json"

Kind = Literal["issues", "forms"]
KINDS: tuple[Kind, ...] = ("issues", "forms")
# 50 a page: far beyond any real issue or form, and a bound on a listing whose next link loops.
MAX_PAGES = 200


@dataclass(frozen=True)
class CreatedAttachment:
    attachment_id: str | None  # None: the Location does not name it, and the flow must find it
    location: str


def usable_id(value: object) -> bool:
    """An id that names one attachment only: not `.` or `..` (urllib3 resolves them), no slash, no control."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and not any(ch in value for ch in "/\\")
        and value.isprintable()
    )


def _path(kind: Kind, parent_id: str, attachment_id: str | None = None) -> str:
    if attachment_id is not None and not usable_id(attachment_id):
        raise MalformedResponseError(f"refusing to address attachment id {attachment_id!r}")
    path = f"/{kind}/{quote(parent_id, safe='')}/attachments"
    return f"{path}/{quote(attachment_id, safe='')}" if attachment_id else path


class ITwinClient:
    def __init__(self, requestor: Requestor) -> None:
        self._requestor = requestor

    def use_deadline(self, deadline: Deadline) -> None:
        self._requestor.use_deadline(deadline)

    def pause(self, error: VendorError, attempt: int) -> bool:
        """Back off before a caller's own retry of a create (after it looked and found nothing); False: give up."""
        return self._requestor.pause(error, attempt)

    def attachment_url(self, kind: Kind, parent_id: str, attachment_id: str) -> str:
        """The documented upload URL (`PUT /{kind}/{id}/attachments/{attachmentId}`), every segment quoted."""
        return self._requestor.url(_path(kind, parent_id, attachment_id))

    def create_attachment(
        self, kind: Kind, parent_id: str, file_name: str, caption: str | None = None, binding: str | None = None
    ) -> CreatedAttachment:
        """POST the metadata (201 only); the file goes later to the returned Location."""
        body: dict[str, Any] = {"fileName": file_name}
        if caption is not None:
            body["caption"] = caption
        if binding is not None:
            body["binding"] = binding
        response = self._requestor.request("POST", _path(kind, parent_id), json=body, idempotent=False, expect=(201,))
        location = response.headers.get("Location", "").strip()
        if not location:
            raise MissingLocationError("create answered without a Location header", http_status=response.status)
        location = self._requestor.url(location)  # a relative Location resolves against the API base
        self._requestor.check_trusted(location)
        return CreatedAttachment(self._attachment_id(location, kind, parent_id), location)

    def _attachment_id(self, location: str, kind: Kind, parent_id: str) -> str | None:
        """The id, when the Location is the documented upload URL of this parent; otherwise None."""
        base_path = urlsplit(self._requestor.base_url).path.rstrip("/")
        prefix = f"{base_path}{_path(kind, parent_id)}/"
        path = urlsplit(location).path
        if not path.startswith(prefix) or "/" in path[len(prefix) :].strip("/"):
            return None
        attachment_id = unquote(path[len(prefix) :].strip("/"))
        return attachment_id if usable_id(attachment_id) else None

    def upload(
        self, location: str, body: BodyFactory, size: int, content_type: str = "application/octet-stream"
    ) -> None:
        """PUT the file to Location (200 or 201). A second PUT overwrites, so retrying is safe."""
        self._requestor.check_trusted(location, "the file and the bearer token")
        self._requestor.request(
            "PUT",
            location,
            body=body,
            headers={"Content-Type": content_type, "Content-Length": str(size)},
            expect=(200, 201),
        )

    def list_attachments(self, kind: Kind, parent_id: str) -> Iterator[dict[str, Any]]:
        """Every attachment, page by page (50 each, `$top`), to the end.

        The next page is `_links.next.href` (checked like a Location before the token goes there), or a
        `continuationToken` in the body, sent back as the query parameter of the same name (BRIEF: "page at
        50 with `$top` and `continuationToken` where they page").
        """
        url: str | None = _path(kind, parent_id)
        params: dict[str, Any] | None = {"$top": 50}
        for _ in range(MAX_PAGES):
            if not url:
                return
            payload = self._requestor.request("GET", url, params=params, expect=(200,)).json()
            if not isinstance(payload, dict) or not isinstance(payload.get("attachments", []), list):
                raise MalformedResponseError("attachment listing is not the documented JSON object", http_status=200)
            yield from (item for item in payload.get("attachments") or [] if isinstance(item, dict))
            url, params = _next_page(payload, _path(kind, parent_id))
        if url:
            raise MalformedResponseError(f"attachment listing still had a next page after {MAX_PAGES} pages")

    def find_attachment(self, kind: Kind, parent_id: str, attachment_id: str) -> dict[str, Any]:
        """One attachment's metadata (there is no GET for one: the listing is searched), or AttachmentNotFound."""
        for item in self.list_attachments(kind, parent_id):
            if item.get("id") == attachment_id:
                return item
        raise NotFoundError(
            f"{kind}/{parent_id} has no attachment {attachment_id!r}",
            http_status=404,
            code="AttachmentNotFound",
            target="attachmentId",
        )

    def download(self, kind: Kind, parent_id: str, attachment_id: str) -> Response:
        """A streamed GET (200); the caller reads `response.raw.iter_content` and closes it."""
        return self._requestor.request("GET", _path(kind, parent_id, attachment_id), stream=True, expect=(200,))

    def delete_attachment(self, kind: Kind, parent_id: str, attachment_id: str) -> None:
        self._requestor.request("DELETE", _path(kind, parent_id, attachment_id), expect=(200, 204))


def _next_page(payload: dict[str, Any], path: str) -> tuple[str | None, dict[str, Any] | None]:
    links = payload.get("_links")
    next_ = links.get("next") if isinstance(links, dict) else None
    next_link = next_.get("href") if isinstance(next_, dict) else None
    if isinstance(next_link, str) and next_link:
        return next_link, None
    token = payload.get("continuationToken")
    if isinstance(token, str) and token:
        return path, {"$top": 50, "continuationToken": token}
    return None, None


def itwin_headers() -> dict[str, str]:
    return {"Accept": ITWIN_ACCEPT}


def itwin_error_fields(body: object) -> ErrorFields:
    """iTwin's error body: `{"error": {code, message, target?, details?}}` (shared/api pages 000 and 001)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return generic_error_fields(body)
    details = err.get("details")
    return (
        _text(err.get("code")),
        _text(err.get("message")),
        _text(err.get("target")),
        [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
