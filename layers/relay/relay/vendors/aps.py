"""Autodesk APS client: project lookup, Data Management upload (signed S3 parts) and BIM 360 RFI attachments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any
from urllib.parse import quote

from relay.errors import ErrorFields, InvalidRequestError, PermissionDeniedError, VendorError
from relay.transport.requestor import Requestor

MIN_PART_BYTES = 5 * 1024 * 1024
MAX_URLS_PER_CALL = 25
OBJECT_PREFIX = "urn:adsk.objects:os.object:"


@dataclass(frozen=True)
class StorageObject:
    object_id: str
    bucket_key: str
    object_key: str

    @classmethod
    def parse(cls, object_id: str) -> StorageObject:
        if not object_id.startswith(OBJECT_PREFIX) or "/" not in object_id[len(OBJECT_PREFIX) :]:
            raise VendorError(f"unexpected storage object id {object_id!r}", code="MalformedResponse")
        bucket, _, key = object_id[len(OBJECT_PREFIX) :].partition("/")
        return cls(object_id, bucket, key)


def aps_error_fields(body: object) -> ErrorFields:
    """APS error bodies: `{developerMessage, errorCode}`, `{code, message}` or JSON:API `{title, detail}`."""
    if not isinstance(body, dict):
        return None, None, None, []
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):  # JSON:API: {"errors": [{...}]}
        body = errors[0]
    code = body.get("errorCode") or body.get("code") or body.get("title")
    message = body.get("developerMessage") or body.get("message") or body.get("detail") or body.get("reason")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else None), None, []


def jsonapi(data: dict[str, Any], included: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"jsonapi": {"version": "1.0"}, "data": data}
    if included is not None:
        doc["included"] = included
    return doc


class ApsClient:
    def __init__(self, requestor: Requestor, part_uploader: Requestor | None = None) -> None:
        self.requestor = requestor
        # Signed S3 part URLs get no Authorization header; this requestor has no token source.
        self.part_uploader = part_uploader or Requestor(
            requestor.base_url,
            tokens=None,
            token_hosts=(),
            session=requestor.session,
            policy=requestor.policy,
            timeout=requestor.timeout,
            sleep=requestor.sleep,
        )

    def rfi_container_id(self, hub_id: str, project_id: str) -> str:
        data = self.requestor.request("GET", f"/project/v1/hubs/{quote(hub_id)}/projects/{quote(project_id)}").json()
        try:
            return str(data["data"]["relationships"]["rfis"]["data"]["id"])
        except (KeyError, TypeError):
            raise VendorError(
                "project has no RFI container (is it a BIM 360 project?)", code="NoRfiContainer"
            ) from None

    def top_folders(self, hub_id: str, project_id: str) -> list[dict[str, Any]]:
        data = self.requestor.request(
            "GET", f"/project/v1/hubs/{quote(hub_id)}/projects/{quote(project_id)}/topFolders"
        ).json()
        return list(data.get("data") or [])

    def create_storage(self, project_id: str, folder_id: str, name: str) -> StorageObject:
        body = jsonapi(
            {
                "type": "objects",
                "attributes": {"name": name},
                "relationships": {"target": {"data": {"type": "folders", "id": folder_id}}},
            }
        )
        data = self.requestor.request("POST", f"/data/v1/projects/{quote(project_id)}/storage", json=body).json()
        return StorageObject.parse(str(data["data"]["id"]))

    def signed_urls(
        self, obj: StorageObject, parts: int, first_part: int, upload_key: str | None
    ) -> tuple[str, list[str]]:
        params: dict[str, Any] = {"parts": parts, "firstPart": first_part}
        if upload_key:
            params["uploadKey"] = upload_key
        data = self.requestor.request("GET", self._signed_path(obj), params=params).json()
        return str(data["uploadKey"]), list(data["urls"])

    def upload_object(
        self,
        obj: StorageObject,
        size: int,
        open_range: Callable[[int, int], IO[bytes]],
        part_size: int = MIN_PART_BYTES,
    ) -> None:
        """Upload `size` bytes in parts read by `open_range(start, length)`, asking for fresh URLs on 403 (expired)."""
        part_size = max(part_size, MIN_PART_BYTES)
        count = max(1, -(-size // part_size))
        upload_key: str | None = None
        part = 1
        resigned_at = 0
        while part <= count:
            batch = min(MAX_URLS_PER_CALL, count - part + 1)
            upload_key, urls = self.signed_urls(obj, batch, part, upload_key)
            for offset, url in enumerate(urls):
                number = part + offset
                start = (number - 1) * part_size
                length = min(part_size, size - start)
                try:
                    self.part_uploader.request(
                        "PUT",
                        url,
                        body=partial(open_range, start, length),
                        auth=False,
                        headers={"Content-Length": str(length)},
                    )
                except PermissionDeniedError:
                    if resigned_at == number:
                        raise  # fresh URLs refused too: not an expiry
                    resigned_at = part = number  # the URLs expired: ask again from this part, same uploadKey
                    break
            else:
                part += batch
        self.requestor.request("POST", self._signed_path(obj), json={"uploadKey": upload_key})

    def create_item(self, project_id: str, folder_id: str, name: str, obj: StorageObject) -> str:
        body = jsonapi(
            {
                "type": "items",
                "attributes": {
                    "displayName": name,
                    "extension": {"type": "items:autodesk.bim360:File", "version": "1.0"},
                },
                "relationships": {
                    "tip": {"data": {"type": "versions", "id": "1"}},
                    "parent": {"data": {"type": "folders", "id": folder_id}},
                },
            },
            [
                {
                    "type": "versions",
                    "id": "1",
                    "attributes": {
                        "name": name,
                        "extension": {"type": "versions:autodesk.bim360:File", "version": "1.0"},
                    },
                    "relationships": {"storage": {"data": {"type": "objects", "id": obj.object_id}}},
                }
            ],
        )
        data = self.requestor.request("POST", f"/data/v1/projects/{quote(project_id)}/items", json=body).json()
        return str(data["data"]["id"])

    def create_version(self, project_id: str, item_id: str, name: str, obj: StorageObject) -> str:
        body = jsonapi(
            {
                "type": "versions",
                "attributes": {"name": name, "extension": {"type": "versions:autodesk.bim360:File", "version": "1.0"}},
                "relationships": {
                    "item": {"data": {"type": "items", "id": item_id}},
                    "storage": {"data": {"type": "objects", "id": obj.object_id}},
                },
            }
        )
        data = self.requestor.request("POST", f"/data/v1/projects/{quote(project_id)}/versions", json=body).json()
        return str(data["data"]["id"])

    def attach_to_rfi(self, container_id: str, rfi_id: str, name: str, item_urn: str) -> dict[str, Any]:
        if not name or len(name) > 400:
            raise InvalidRequestError("RFI attachment name must be 1 to 400 characters", code="InvalidName")
        result: dict[str, Any] = self.requestor.request(
            "POST",
            self._rfi_path(container_id, rfi_id),
            json={"name": name, "urn": item_urn, "urnType": "dm"},
            headers={"Content-Type": "application/json"},
        ).json()
        return result

    def list_rfi_attachments(self, container_id: str, rfi_id: str) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            data = self.requestor.request(
                "GET", self._rfi_path(container_id, rfi_id), params={"limit": 200, "offset": offset}
            ).json()
            results = list(data.get("results") or [])
            yield from results
            offset += len(results)
            total = int((data.get("pagination") or {}).get("totalResults", 0))
            if not results or offset >= total:
                return

    def delete_rfi_attachment(self, container_id: str, rfi_id: str, attachment_id: str) -> None:
        self.requestor.request("DELETE", f"{self._rfi_path(container_id, rfi_id)}/{quote(attachment_id)}")

    @staticmethod
    def _signed_path(obj: StorageObject) -> str:
        return f"/oss/v2/buckets/{quote(obj.bucket_key)}/objects/{quote(obj.object_key, safe='')}/signeds3upload"

    @staticmethod
    def _rfi_path(container_id: str, rfi_id: str) -> str:
        return f"/bim360/rfis/v2/containers/{quote(container_id)}/rfis/{quote(rfi_id)}/attachments"
