"""Sandbox tier: the platform sandbox alone, in-process, over real HTTP; no moto, no relay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from sandbox import Sandbox
from sandbox.seed import APS_CLIENT, ITWIN_CLIENT, Seeded, seed


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    server = Sandbox().start()
    yield server
    server.stop()


@dataclass
class Client:
    """A test's view of the sandbox: its URL, the admin API, and an iTwin token."""

    url: str
    seeded: Seeded
    http: requests.Session

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.http.request(method, f"{self.url}/__sandbox/{path}", json=body, timeout=10)

    def fault(self, endpoint: str, **options: Any) -> None:
        response = self.admin("POST", "faults", {"endpoint": endpoint, **options})
        assert response.status_code == 204, response.text

    def config(self, **settings: Any) -> None:
        response = self.admin("PUT", "config", settings)
        assert response.status_code == 204, response.text

    def inspect(self) -> dict[str, Any]:
        data: dict[str, Any] = self.admin("GET", "inspect").json()
        return data

    def new_parent(self, kind: str = "issues") -> str:
        parent = f"{kind[:-1].upper()}-{uuid.uuid4().hex[:8]}"
        assert self.admin("POST", f"itwin/{kind}", {"id": parent}).status_code == 201
        return parent

    def itwin_token(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": ITWIN_CLIENT[0],
            "client_secret": ITWIN_CLIENT[1],
            "scope": "itwin-platform",
        }
        response = self.http.post(f"{self.url}/connect/token", data=form, timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def aps_token(self) -> str:
        refresh = self.admin("POST", "aps/refresh-tokens", {"client_id": APS_CLIENT[0]}).json()["refresh_token"]
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": APS_CLIENT[0],
            "client_secret": APS_CLIENT[1],
        }
        response = self.http.post(f"{self.url}/authentication/v2/token", data=form, timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def itwin(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "application/vnd.bentley.itwin-platform.v1+json"}


@pytest.fixture
def sb(sandbox_server: Sandbox) -> Iterator[Client]:
    """A freshly reset sandbox with the local stack's demo data."""
    http = requests.Session()
    assert http.post(f"{sandbox_server.url}/__sandbox/reset", timeout=10).status_code == 204
    yield Client(sandbox_server.url, seed(sandbox_server.url, http), http)
    http.close()
