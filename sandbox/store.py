"""Sandbox state: what exists on each platform, with file bytes kept on disk."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
DEFAULT_APS_USER = {"sub": "SANDBOXUSER", "name": "Sandbox Tester", "email": "tester@sandbox.example"}


@dataclass
class StoredFile:
    path: Path
    size: int
    sha256: str


@dataclass
class ITwinAttachment:
    id: str
    fileName: str
    caption: str | None
    binding: str | None
    createdDateTime: str
    file: StoredFile | None = None
    uploads: int = 0

    def metadata(self) -> dict[str, Any]:
        ext = Path(self.fileName).suffix.lstrip(".").lower() or None
        return {
            "id": self.id,
            "fileName": self.fileName,
            "createdDateTime": self.createdDateTime,
            "size": self.file.size if self.file else None,
            "caption": self.caption,
            "binding": self.binding,
            "type": ext,
        }


@dataclass
class ApsUpload:
    bucket_key: str
    object_key: str
    upload_key: str
    parts: dict[int, StoredFile] = field(default_factory=dict)


@dataclass
class ApsItem:
    id: str
    project_id: str
    folder_id: str
    name: str
    versions: list[str] = field(default_factory=list)


@dataclass
class RfiAttachment:
    id: str
    rfi_id: str
    name: str
    urn: str
    created_at: str


def now_iso() -> str:
    now = time.time()  # one reading: two could straddle a second and go back in time
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def new_attachment_id() -> str:
    return secrets.token_urlsafe(32)[:43]


class Store:
    """All sandbox state behind one lock. Files stream to disk; nothing holds a whole upload in memory."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self._owned = data_dir is None
        self.root = Path(data_dir or tempfile.mkdtemp(prefix="relay-sandbox-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            for child in self.root.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
            # iTwin
            self.issues: dict[str, dict[str, ITwinAttachment]] = {}
            self.forms: dict[str, dict[str, ITwinAttachment]] = {}
            self.clients: dict[str, dict[str, str]] = {}  # client_id -> {secret, platform}
            self.tokens: dict[str, tuple[str, float]] = {}  # access token -> (platform, expiry epoch)
            self.refresh_tokens: dict[str, str] = {}  # refresh token -> client_id (one use each)
            self.used_refresh_tokens: set[str] = set()
            # APS three-legged sign-in: one-time codes bound to the PKCE challenge, and who each token is for.
            self.auth_codes: dict[str, dict[str, Any]] = {}
            self.token_users: dict[str, dict[str, str]] = {}  # access or refresh token -> the signed-in user
            self.aps_user: dict[str, str] = dict(DEFAULT_APS_USER)  # who the authorize endpoint signs in
            self.aps_consent = "allow"  # or "deny": the user refuses, and the callback gets error=access_denied
            # APS
            self.projects: dict[tuple[str, str], dict[str, str]] = {}  # (hub, project) -> {container, folder}
            self.objects: dict[str, StoredFile] = {}  # "bucket/object" -> file
            self.storage_targets: dict[str, str] = {}  # "bucket/object" -> folder id
            self.uploads: dict[str, ApsUpload] = {}
            self.items: dict[str, ApsItem] = {}
            self.rfis: dict[tuple[str, str], dict[str, RfiAttachment]] = {}
            self.request_counts: dict[str, int] = {}
            self.connections = 0  # TCP connections accepted: proves warm invocations reuse theirs
            self.max_upload_bytes = 30 * 1024 * 1024
            self.min_part_bytes = 5 * 1024 * 1024
            self.location_base: str | None = None  # where create's Location points (default: the request's host)
            self.next_link_base: str | None = None  # where a listing's _links.next.href points (same default)
            self.part_url_base: str | None = None  # where signed part URLs point, as S3 is another host (same default)
            self.created_date_time: Any = None  # when set, what every listed attachment claims as createdDateTime
            self.token_lifetime = 3600

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- files -------------------------------------------------------------------------------

    def write_stream(self, chunks: Any, limit: int | None) -> StoredFile | None:
        """Stream chunks to a new file; None when the limit is exceeded (the partial file is removed)."""
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self.root, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    out.close()
                    os.unlink(name)
                    return None
                digest.update(chunk)
                out.write(chunk)
        return StoredFile(Path(name), size, digest.hexdigest())

    @staticmethod
    def read_chunks(stored: StoredFile) -> Any:
        with open(stored.path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def concat(self, parts: list[StoredFile]) -> StoredFile:
        def chunks() -> Any:
            for part in parts:
                yield from self.read_chunks(part)

        result = self.write_stream(chunks(), None)
        assert result is not None
        return result

    @staticmethod
    def discard(stored: StoredFile | None) -> None:
        if stored is not None:
            stored.path.unlink(missing_ok=True)

    # -- tokens ------------------------------------------------------------------------------

    def issue_token(self, platform: str) -> tuple[str, int]:
        token = f"sbx-{platform}-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = (platform, time.time() + self.token_lifetime)
        return token, self.token_lifetime

    def issue_refresh_token(self, client_id: str) -> str:
        token = "sbx-refresh-" + secrets.token_urlsafe(24)
        with self.lock:
            self.refresh_tokens[token] = client_id
        return token

    def token_valid(self, token: str, platform: str) -> bool:
        with self.lock:
            entry = self.tokens.get(token)
        return entry is not None and entry[0] == platform and entry[1] > time.time()

    # -- views -------------------------------------------------------------------------------

    def inspect(self) -> dict[str, Any]:
        def itwin(parents: dict[str, dict[str, ITwinAttachment]]) -> dict[str, Any]:
            return {
                pid: [
                    {**a.metadata(), "sha256": a.file.sha256 if a.file else None, "uploads": a.uploads}
                    for a in atts.values()
                ]
                for pid, atts in parents.items()
            }

        with self.lock:
            return {
                "itwin": {"issues": itwin(self.issues), "forms": itwin(self.forms)},
                "aps": {
                    "items": {
                        i.id: {
                            "name": i.name,
                            "folder": i.folder_id,
                            "versions": [
                                {"object": v, "size": self.objects[v].size, "sha256": self.objects[v].sha256}
                                for v in i.versions
                                if v in self.objects
                            ],
                        }
                        for i in self.items.values()
                    },
                    "rfis": {f"{c}/{r}": [asdict(a) for a in atts.values()] for (c, r), atts in self.rfis.items()},
                },
                "requests": dict(self.request_counts),
                "connections": self.connections,
            }
