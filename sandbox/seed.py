"""The local stack's demo data (clients, issues, forms, a BIM 360 project and RFI), seeded through the admin API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

# Sandbox credentials the local secrets hold. They are only valid against a local sandbox.
ITWIN_CLIENT = ("relay-local-itwin", "local-itwin-client-secret")
APS_CLIENT = ("relay-local-aps", "local-aps-client-secret")
# The local stack's iTwin webhook secret (WebhookSecret's `current`): 32+ characters, as iTwin requires.
WEBHOOK_SECRET = "local-itwin-webhook-secret-0123456789abcdef"  # noqa: S105 - local only
DEMO_ISSUES = ("ISSUE-1001", "ISSUE-1002", "ISSUE-ÜNICODE-7")
DEMO_FORMS = ("FORM-2001",)
DEMO_HUB = "b.demo-hub"
DEMO_PROJECT = "b.demo-project"
DEMO_RFI = "RFI-1"


@dataclass(frozen=True)
class Seeded:
    """What `seed` created, with the ids the sandbox chose."""

    url: str
    container: str  # the demo project's RFI container
    folder: str  # its "Project Files" folder

    def summary(self) -> list[str]:
        return [
            f"  iTwin client  {ITWIN_CLIENT[0]} / {ITWIN_CLIENT[1]}  (POST {self.url}/connect/token,"
            " grant_type=client_credentials, scope=itwin-platform)",
            f"  APS client    {APS_CLIENT[0]} / {APS_CLIENT[1]}  (first refresh token:"
            f' POST {self.url}/__sandbox/aps/refresh-tokens {{"client_id": "{APS_CLIENT[0]}"}})',
            f"  issues        {', '.join(DEMO_ISSUES)}",
            f"  forms         {', '.join(DEMO_FORMS)}",
            f"  BIM 360       hub {DEMO_HUB}, project {DEMO_PROJECT}, RFI container {self.container}, RFI {DEMO_RFI}",
            f"                folder {self.folder}",
        ]


def seed(url: str, session: requests.Session | None = None) -> Seeded:
    """Create the demo data in the sandbox at `url`; seeding again changes nothing."""
    http = session or requests.Session()

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = http.post(f"{url}/__sandbox/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else {}

    post("clients", {"platform": "itwin", "client_id": ITWIN_CLIENT[0], "client_secret": ITWIN_CLIENT[1]})
    post("clients", {"platform": "aps", "client_id": APS_CLIENT[0], "client_secret": APS_CLIENT[1]})
    for issue in DEMO_ISSUES:
        post("itwin/issues", {"id": issue})
    for form in DEMO_FORMS:
        post("itwin/forms", {"id": form})
    project = post("aps/projects", {"hub": DEMO_HUB, "project": DEMO_PROJECT, "name": "Demo"})
    post("aps/rfis", {"container": project["container"], "rfi": DEMO_RFI})
    return Seeded(url, project["container"], project["folder"])
