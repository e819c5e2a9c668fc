"""Contract: requests shaped as the vendor pages describe get the status, headers and bodies the pages show.

Requests and expected bodies are read from the pages themselves (tests/data/vendor-api), so the sandbox is held
to the vendor's text; what the pages leave out is held to the brief's vendor facts.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests

from tests.conftest import VENDOR_PAGES
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration
ISSUES_PAGE = VENDOR_PAGES / "000_93443b50b50c5967.txt"
FORMS_PAGE = VENDOR_PAGES / "001_4da04718321d26eb.txt"
RFI_PAGE = VENDOR_PAGES / "002_cc017d21947b02bb.txt"


def examples(page: Any) -> dict[int, Any]:
    """The first JSON example after each 'Response NNN' heading of an API page."""
    text = page.read_text(encoding="utf-8")
    found: dict[int, Any] = {}
    decoder = json.JSONDecoder()
    for match in re.finditer(r"Response (\d{3})", text):
        status = int(match.group(1))
        start = text.find("{", match.end())
        if status in found or start < 0:
            continue
        try:
            found[status], _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
    return found


def request_example(page: Any) -> Any:
    """The request body example of an API page: the JSON after its 'Example' heading."""
    text = page.read_text(encoding="utf-8")
    return json.JSONDecoder().raw_decode(text, text.index("{", text.index("\nExample\n")))[0]


ISSUES = examples(ISSUES_PAGE)
FORMS = examples(FORMS_PAGE)
CREATE_EXAMPLE = request_example(ISSUES_PAGE)


@pytest.fixture
def token(harness: Harness) -> str:
    from sandbox.seed import ITWIN_CLIENT

    response = requests.post(
        f"{harness.sandbox}/connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": ITWIN_CLIENT[0],
            "client_secret": ITWIN_CLIENT[1],
            "scope": "itwin-platform",
        },
        timeout=10,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    return str(body["access_token"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/vnd.bentley.itwin-platform.v1+json"}


def test_pages_hold_the_examples_we_test_against():
    assert set(ISSUES) >= {401, 404, 422, 429}
    assert set(FORMS) >= {200, 401, 404, 429}
    assert set(CREATE_EXAMPLE) == {"fileName", "caption", "binding"}


def test_create_issue_attachment_201_with_absolute_location(harness: Harness, token: str):
    issue = harness.new_parent()
    response = requests.post(
        f"{harness.sandbox}/issues/{issue}/attachments", json=CREATE_EXAMPLE, headers=auth(token), timeout=10
    )
    assert response.status_code == 201
    location = response.headers["Location"]  # the page names the header; the brief assumes an absolute URL
    assert location.startswith(f"{harness.sandbox}/issues/{issue}/attachments/")
    put = requests.put(location, data=b"png-bytes", headers=auth(token), timeout=10)
    assert put.status_code == 201
    again = requests.put(location, data=b"new-bytes!", headers=auth(token), timeout=10)  # a second PUT overwrites
    assert again.status_code == 201
    listing = requests.get(f"{harness.sandbox}/issues/{issue}/attachments", headers=auth(token), timeout=10).json()
    (att,) = listing["attachments"]
    assert (att["fileName"], att["caption"], att["binding"]) == (
        CREATE_EXAMPLE["fileName"],
        CREATE_EXAMPLE["caption"],
        CREATE_EXAMPLE["binding"],
    )
    assert att["size"] == len(b"new-bytes!")
    assert att["type"] == "png"
    download = requests.get(location, headers=auth(token), timeout=10)
    assert download.content == b"new-bytes!"
    assert download.headers["Content-Type"] == "image/png"
    assert requests.delete(location, headers=auth(token), timeout=10).status_code == 204
    assert requests.get(location, headers=auth(token), timeout=10).json()["error"]["code"] == "AttachmentNotFound"


def test_create_without_authorization_is_401_header_not_found(harness: Harness):
    issue = harness.new_parent()
    response = requests.post(f"{harness.sandbox}/issues/{issue}/attachments", json={"fileName": "a.png"}, timeout=10)
    assert response.status_code == 401
    assert response.json() == ISSUES[401]


def test_create_on_missing_issue_is_404_issue_not_found(harness: Harness, token: str):
    response = requests.post(
        f"{harness.sandbox}/issues/nope/attachments", json={"fileName": "a.png"}, headers=auth(token), timeout=10
    )
    assert response.status_code == 404
    assert response.json() == ISSUES[404]


def test_create_without_file_name_is_422_with_details(harness: Harness, token: str):
    issue = harness.new_parent()
    response = requests.post(
        f"{harness.sandbox}/issues/{issue}/attachments", json={"caption": "x"}, headers=auth(token), timeout=10
    )
    assert response.status_code == 422
    assert response.json() == ISSUES[422]


def test_issue_rate_limit_is_429_with_retry_after(harness: Harness, token: str):
    issue = harness.new_parent()
    harness.fault("itwin.issues.create", rate_limit_per_minute=2)
    codes = [
        requests.post(
            f"{harness.sandbox}/issues/{issue}/attachments", json={"fileName": "a.png"}, headers=auth(token), timeout=10
        )
        for _ in range(3)
    ]
    assert [r.status_code for r in codes] == [201, 201, 429]
    assert codes[2].json() == ISSUES[429]
    assert 1 <= int(codes[2].headers["retry-after"]) <= 60


def test_forms_list_200_matches_the_documented_shape(harness: Harness, token: str):
    form = harness.new_parent("forms")
    for doc in FORMS[200]["attachments"]:
        body = {"fileName": doc["fileName"], "caption": doc["caption"], "binding": doc["binding"]}
        location = requests.post(
            f"{harness.sandbox}/forms/{form}/attachments", json=body, headers=auth(token), timeout=10
        ).headers["Location"]
        requests.put(location, data=b"x" * 10, headers=auth(token), timeout=10)
    listing = requests.get(f"{harness.sandbox}/forms/{form}/attachments", headers=auth(token), timeout=10)
    assert listing.status_code == 200
    got = listing.json()["attachments"]
    assert [set(a) for a in got] == [set(a) for a in FORMS[200]["attachments"]]
    for mine, theirs in zip(got, FORMS[200]["attachments"], strict=True):
        assert (mine["fileName"], mine["caption"], mine["binding"], mine["type"]) == (
            theirs["fileName"],
            theirs["caption"],
            theirs["binding"],
            theirs["type"],
        )


def test_forms_errors_match_the_page(harness: Harness, token: str):
    no_auth = requests.get(f"{harness.sandbox}/forms/x/attachments", timeout=10)
    assert (no_auth.status_code, no_auth.json()) == (401, FORMS[401])
    missing = requests.get(f"{harness.sandbox}/forms/none/attachments", headers=auth(token), timeout=10)
    assert (missing.status_code, missing.json()) == (404, FORMS[404])
    form = harness.new_parent("forms")
    harness.fault("itwin.forms.list", rate_limit_per_minute=1)
    requests.get(f"{harness.sandbox}/forms/{form}/attachments", headers=auth(token), timeout=10)
    limited = requests.get(f"{harness.sandbox}/forms/{form}/attachments", headers=auth(token), timeout=10)
    assert (limited.status_code, limited.json()) == (429, FORMS[429])
    assert int(limited.headers["retry-after"]) > 0


def test_upload_above_the_limit_is_413_request_too_large(harness: Harness, token: str):
    form = harness.new_parent("forms")
    harness.admin("PUT", "config", {"max_upload_bytes": 1000})
    location = requests.post(
        f"{harness.sandbox}/forms/{form}/attachments", json={"fileName": "big.bin"}, headers=auth(token), timeout=10
    ).headers["Location"]
    response = requests.put(location, data=b"x" * 1001, headers=auth(token), timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "RequestTooLarge"
    no_file = requests.get(location, headers=auth(token), timeout=10)
    assert (no_file.status_code, no_file.json()["error"]["code"]) == (404, "FileNotFound")


def test_upload_to_unknown_attachment_is_404(harness: Harness, token: str):
    issue = harness.new_parent()
    response = requests.put(
        f"{harness.sandbox}/issues/{issue}/attachments/nope", data=b"x", headers=auth(token), timeout=10
    )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "AttachmentNotFound")


def test_invalid_token_is_401(harness: Harness):
    response = requests.get(f"{harness.sandbox}/issues/x/attachments", headers=auth("forged"), timeout=10)
    assert response.status_code == 401


def test_list_pages_at_50_with_continuation(harness: Harness, token: str):
    issue = harness.new_parent()
    for i in range(53):
        requests.post(
            f"{harness.sandbox}/issues/{issue}/attachments",
            json={"fileName": f"{i}.jpg"},
            headers=auth(token),
            timeout=10,
        )
    first = requests.get(f"{harness.sandbox}/issues/{issue}/attachments", headers=auth(token), timeout=10).json()
    assert len(first["attachments"]) == 50
    second = requests.get(first["_links"]["next"]["href"], headers=auth(token), timeout=10).json()
    assert len(second["attachments"]) == 3
    assert "_links" not in second


def test_rfi_attach_contract_from_page_002(harness: Harness):
    from tests.integration.test_aps import make_item, refreshed_client

    client = refreshed_client(harness)
    container, item = make_item(harness, client, b"photo", "Photo.png")
    headers = {"Authorization": f"Bearer {client.requestor.tokens.token()}", "Content-Type": "application/json"}  # type: ignore[union-attr]
    url = f"{harness.sandbox}/bim360/rfis/v2/containers/{container}/rfis/RFI-1/attachments"
    created = requests.post(url, json={"name": "Photo.png", "urn": item, "urnType": "dm"}, headers=headers, timeout=10)
    assert created.status_code == 201
    page = RFI_PAGE.read_text(encoding="utf-8")
    example_keys = set(json.JSONDecoder().raw_decode(page, page.index("{", page.index("Response\n{")))[0])
    assert set(created.json()) >= example_keys - {"deletedAt", "deletedBy"}
    assert created.json()["urnType"] == "dm"
    assert created.json()["name"] == "Photo.png"
    for bad in (
        {"name": "x" * 401, "urn": item, "urnType": "dm"},
        {"name": "a", "urn": item, "urnType": "oss"},
        {"name": "a", "urn": "urn:adsk.wipprod:dm.lineage:missing", "urnType": "dm"},
    ):
        assert requests.post(url, json=bad, headers=headers, timeout=10).status_code == 400
    assert requests.post(url, json={"name": "a", "urn": item, "urnType": "dm"}, timeout=10).status_code == 401
