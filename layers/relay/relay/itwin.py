"""Bentley iTwin Issues and Forms attachment client (resources over the Requestor)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from relay.constants import ITWIN_ACCEPT
from relay.exceptions import UnsafeLocationError, VendorError
from relay.http import BodyFactory, Requestor, Response
from relay.settings import host_of

Kind = Literal["issues", "forms"]
KINDS: tuple[Kind, ...] = ("issues", "forms")


@dataclass(frozen=True)
class CreatedAttachment:
    attachment_id: str
    location: str


def _path(kind: Kind, parent_id: str, attachment_id: str | None = None) -> str:
    path = f"/{kind}/{quote(parent_id, safe='')}/attachments"
    return f"{path}/{quote(attachment_id, safe='')}" if attachment_id else path


class ITwinClient:
    def __init__(self, requestor: Requestor) -> None:
        self.requestor = requestor

    def create_attachment(
        self, kind: Kind, parent_id: str, file_name: str, caption: str | None = None, binding: str | None = None
    ) -> CreatedAttachment:
        """POST the metadata; the file goes later to the returned Location."""
        body: dict[str, Any] = {"fileName": file_name}
        if caption is not None:
            body["caption"] = caption
        if binding is not None:
            body["binding"] = binding
        response = self.requestor.request("POST", _path(kind, parent_id), json=body, idempotent=False)
        location = response.headers.get("Location")
        if not location:
            raise VendorError(
                "create answered without a Location header", http_status=response.status, code="MissingLocation"
            )
        location = self.requestor.url(location)  # a relative Location resolves against the API base
        attachment_id = urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
        return CreatedAttachment(attachment_id, location)

    def check_upload_location(self, location: str) -> None:
        if not self.requestor.may_receive_token(location):
            raise UnsafeLocationError(
                f"upload Location is on host {host_of(location)!r}, which is neither the configured iTwin API host "
                "nor listed in RELAY_ALLOWED_UPLOAD_HOSTS; no bytes were sent"
            )

    def upload(
        self, location: str, body: BodyFactory, size: int, content_type: str = "application/octet-stream"
    ) -> None:
        """PUT the file to Location. A second PUT overwrites, so retrying is safe."""
        self.check_upload_location(location)
        self.requestor.request(
            "PUT",
            location,
            body=body,
            headers={"Content-Type": content_type, "Content-Length": str(size)},
        )

    def list_attachments(self, kind: Kind, parent_id: str) -> Iterator[dict[str, Any]]:
        """Every attachment, following `_links.next` / continuationToken pages."""
        url: str | None = _path(kind, parent_id)
        params: dict[str, Any] | None = {"$top": 50}
        while url:
            payload = self.requestor.request("GET", url, params=params).json()
            yield from payload.get("attachments") or []
            next_link = ((payload.get("_links") or {}).get("next") or {}).get("href")
            url, params = (next_link, None) if next_link else (None, None)

    def download(self, kind: Kind, parent_id: str, attachment_id: str) -> Response:
        """A streamed GET; the caller reads `response.raw.iter_content` and closes it."""
        return self.requestor.request("GET", _path(kind, parent_id, attachment_id), stream=True)

    def delete_attachment(self, kind: Kind, parent_id: str, attachment_id: str) -> None:
        self.requestor.request("DELETE", _path(kind, parent_id, attachment_id))


def itwin_headers() -> dict[str, str]:
    return {"Accept": ITWIN_ACCEPT}
