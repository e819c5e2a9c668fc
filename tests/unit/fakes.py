"""Scripted stand-ins for requests' Session and Response: decision tests need no network."""

from __future__ import annotations

import json
from typing import Any


class FakeSession:
    """Answers each request from a script; records what was sent."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.sent.append((method, url, kwargs))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


class FakeResponse:
    def __init__(self, status: int, body: bytes | dict[str, Any] = b"", headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.content = json.dumps(body).encode() if isinstance(body, dict) else body
        self.headers = headers or {}

    def iter_content(self, chunk_size: int = 1) -> Any:
        yield self.content[:chunk_size]

    def json(self) -> Any:
        return json.loads(self.content)

    def close(self) -> None:
        pass
