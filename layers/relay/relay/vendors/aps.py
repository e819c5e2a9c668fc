"""Autodesk APS client: project lookup, Data Management upload (signed S3 parts) and BIM 360 RFI attachments."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import IO, Any
from urllib.parse import quote

from relay.errors import (
    ErrorFields,
    InvalidRequestError,
    MalformedResponseError,
    PermissionDeniedError,
    VendorError,
)
from relay.transport.requestor import Requestor
from relay.transport.retry import Deadline

MIN_PART_BYTES = 5 * 1024 * 1024
MAX_URLS_PER_CALL = 25
OBJECT_PREFIX = "urn:adsk.objects:os.object:"
MAX_NAME_CHARS = 400
# Data Management speaks JSON:API; the RFI endpoint takes plain JSON (shared/api/002).
JSONAPI_HEADERS = {"Content-Type": "application/vnd.api+json"}
# Folder contents page at up to 200; a bound on a next link that loops.
MAX_PAGES = 500


def part_count(size: int, part_size: int) -> int:
    """How many parts `size` bytes take: at least one, so an upload always has something to complete."""
    return max(1, -(-size // part_size))


@dataclass(frozen=True)
class FolderItem:
    """An item listed in a folder: its lineage id, its name, and its tip version (id and storage object)."""

    item_id: str
    name: str
    tip_version_id: str | None
    tip_storage_id: str | None


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


def _storage_of(version: dict[str, Any]) -> str | None:
    """A version's storage object id (`relationships.storage.data.id`), or None."""
    storage = ((version.get("relationships") or {}).get("storage") or {}).get("data") or {}
    found = storage.get("id") if isinstance(storage, dict) else None
    return str(found) if found else None


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

    def use_deadline(self, deadline: Deadline) -> None:
        """Retries, the part PUTs' included, must not outlive the invocation."""
        self.requestor.use_deadline(deadline)
        self.part_uploader.use_deadline(deadline)

    def pause(self, error: VendorError, attempt: int) -> bool:
        """Back off before a caller's own retry of a create (after it looked and found nothing); False: give up."""
        return self.requestor.pause(error, attempt)

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
        data = self.requestor.request(
            "POST",
            f"/data/v1/projects/{quote(project_id)}/storage",
            json=body,
            headers=JSONAPI_HEADERS,
            idempotent=False,
        ).json()
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
        """Upload `size` bytes in parts read by `open_range(start, length)`, one at a time, and complete it.

        The same upload as the flow's (`upload_parts`, then `complete_upload`), without a record to resume from.
        """
        upload_key = self.upload_parts(obj, size, max(part_size, MIN_PART_BYTES), open_range, concurrency=1)
        self.complete_upload(obj, upload_key)

    def create_item(self, project_id: str, folder_id: str, name: str, obj: StorageObject) -> tuple[str, str | None]:
        """Create the item and its first version; return (lineage id, version id or None when not answered)."""
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
        data = self.requestor.request(
            "POST", f"/data/v1/projects/{quote(project_id)}/items", json=body, headers=JSONAPI_HEADERS, idempotent=False
        ).json()
        try:
            item_id = str(data["data"]["id"])
        except (KeyError, TypeError):
            raise MalformedResponseError("the item create answered without data.id", http_status=201) from None
        # The answer's `included` holds the first version; an answer without it leaves the caller to list.
        versions = [v for v in data.get("included") or [] if isinstance(v, dict) and v.get("type") == "versions"]
        version_id = versions[0].get("id") if versions else None
        return item_id, str(version_id) if version_id else None

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
        data = self.requestor.request(
            "POST",
            f"/data/v1/projects/{quote(project_id)}/versions",
            json=body,
            headers=JSONAPI_HEADERS,
            idempotent=False,
        ).json()
        return str(data["data"]["id"])

    def attach_to_rfi(self, container_id: str, rfi_id: str, name: str, item_urn: str) -> dict[str, Any]:
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidRequestError("RFI attachment name must be 1 to 400 characters", code="InvalidName")
        # Not resent after a lost answer: the caller lists the RFI's attachments and adopts by urn instead.
        result = self.requestor.request(
            "POST",
            self._rfi_path(container_id, rfi_id),
            json={"name": name, "urn": item_urn, "urnType": "dm"},
            headers={"Content-Type": "application/json"},
            idempotent=False,
            expect=(200, 201),
        ).json()
        if not isinstance(result, dict) or not isinstance(result.get("id"), str) or not result["id"]:
            raise MalformedResponseError("the RFI attach answered without an attachment id", http_status=201)
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

    def folder_items(self, project_id: str, folder_id: str) -> Iterator[FolderItem]:
        """Every item in a folder, page by page (`page[number]`, `page[limit]`, next page in `links.next.href`)."""
        url = f"/data/v1/projects/{quote(project_id)}/folders/{quote(folder_id, safe='')}/contents"
        for data in self._pages(url, {"page[number]": 0, "page[limit]": 200}):
            tips = {
                str(v.get("id")): _storage_of(v)
                for v in data.get("included") or []
                if isinstance(v, dict) and v.get("type") == "versions"
            }
            for entry in data.get("data") or []:
                if not isinstance(entry, dict) or entry.get("type") != "items" or not entry.get("id"):
                    continue
                attributes = entry.get("attributes") or {}
                tip = (((entry.get("relationships") or {}).get("tip") or {}).get("data") or {}).get("id")
                yield FolderItem(
                    str(entry["id"]),
                    str(attributes.get("displayName") or attributes.get("name") or ""),
                    str(tip) if tip else None,
                    tips.get(str(tip)) if tip else None,
                )

    def upload_parts(
        self,
        obj: StorageObject,
        size: int,
        part_size: int,
        open_range: Callable[[int, int], IO[bytes]],
        *,
        upload_key: str | None = None,
        done: Collection[int] = (),
        concurrency: int = 4,
        on_part: Callable[[str, int], None] | None = None,
    ) -> str:
        """PUT every part not in `done`, up to `concurrency` at once; return the uploadKey, for completing.

        Each part is one ranged read streamed into its PUT, so at most `concurrency` reads are open and no
        part is held whole. URLs come 25 a call; a 403 on a part means they expired: the same uploadKey is
        asked again, and only the parts not done are sent. `on_part(upload_key, number)` records each one.
        """
        count = part_count(size, part_size)
        todo = [n for n in range(1, count + 1) if n not in set(done)]
        key = upload_key
        if not todo and key:
            return key
        lock = threading.Lock()
        resigned_for: int | None = None
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="aps-part") as pool:
            while todo or key is None:
                first = todo[0] if todo else 1
                window = [n for n in todo if n < first + MAX_URLS_PER_CALL] or [first]
                key, urls = self.signed_urls(obj, window[-1] - first + 1, first, key)
                expired: list[int] = []

                def put(number: int, url: str, upload_key: str, expired: list[int] = expired) -> None:
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
                        with lock:
                            expired.append(number)
                        return
                    if on_part is not None:
                        on_part(upload_key, number)

                futures = [pool.submit(put, n, urls[n - first], key) for n in window if n - first < len(urls)]
                errors = [f.exception() for f in futures]
                failure = next((e for e in errors if e is not None), None)
                if failure is not None:
                    raise failure
                if expired:
                    if resigned_for == min(expired):
                        raise PermissionDeniedError(
                            f"part {min(expired)} was refused with fresh URLs too: not an expiry", http_status=403
                        )
                    resigned_for = min(expired)
                finished = set(window) - set(expired)
                todo = [n for n in todo if n not in finished]
        return key

    def complete_upload(self, obj: StorageObject, upload_key: str) -> dict[str, Any]:
        """Finish the signed upload (required even for one part); the answer names the object and its size."""
        result: dict[str, Any] = self.requestor.request(
            "POST", self._signed_path(obj), json={"uploadKey": upload_key}
        ).json()
        return result

    def item_versions(self, project_id: str, item_id: str) -> Iterator[tuple[str, str | None]]:
        """Every version of an item as (version id, storage object id), page by page (`links.next.href`)."""
        url = f"/data/v1/projects/{quote(project_id)}/items/{quote(item_id, safe='')}/versions"
        for data in self._pages(url, None):
            for entry in data.get("data") or []:
                if isinstance(entry, dict) and entry.get("type") == "versions" and entry.get("id"):
                    yield str(entry["id"]), _storage_of(entry)

    def _pages(self, url: str, params: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
        """A JSON:API listing's pages, following `links.next.href` (the requestor checks where it points)."""
        next_url: str | None = url
        for _ in range(MAX_PAGES):
            if not next_url:
                return
            data = self.requestor.request("GET", next_url, params=params).json()
            if not isinstance(data, dict):
                raise MalformedResponseError("a DM listing is not a JSON:API document", http_status=200)
            yield data
            link = ((data.get("links") or {}).get("next") or {}).get("href")
            next_url, params = (link, None) if isinstance(link, str) and link else (None, None)
        raise MalformedResponseError(f"a DM listing still had a next page after {MAX_PAGES} pages")

    @staticmethod
    def _signed_path(obj: StorageObject) -> str:
        return f"/oss/v2/buckets/{quote(obj.bucket_key)}/objects/{quote(obj.object_key, safe='')}/signeds3upload"

    @staticmethod
    def _rfi_path(container_id: str, rfi_id: str) -> str:
        return f"/bim360/rfis/v2/containers/{quote(container_id)}/rfis/{quote(rfi_id)}/attachments"
