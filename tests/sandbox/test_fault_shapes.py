"""Fault injection over real HTTP: raw, hostile and leaky answers, in each vendor's shape, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.sandbox.conftest import Client

# What a create could answer to send the file (and the token) elsewhere: urllib3 and a browser disagree on
# which host this names.
HOSTILE = "http://127.0.0.1:9\\@api-host/issues/ISSUE-1001/attachments/x"
FORMS_PAGE_TIME = "2020-10-20T16:16:30.6704320Z"  # seven fraction digits, as on the Forms page


def create(sb: Client, token: str, parent: str, kind: str = "issues") -> requests.Response:
    return sb.http.post(
        f"{sb.url}/{kind}/{parent}/attachments",
        json={"fileName": "a.png"},
        headers=sb.itwin(token),
        allow_redirects=False,
        timeout=10,
    )


def listing(sb: Client, token: str, parent: str, top: int | None = None) -> requests.Response:
    params = {} if top is None else {"$top": top}
    return sb.http.get(f"{sb.url}/forms/{parent}/attachments", params=params, headers=sb.itwin(token), timeout=10)


def test_create_answered_201_with_a_hostile_location_once(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault("itwin.issues.create", fail_next=[{"status": 201, "headers": {"Location": HOSTILE}, "body": ""}])
    first = create(sb, token, issue)
    assert (first.status_code, first.headers["Location"], first.content) == (201, HOSTILE, b"")
    assert sb.inspect()["itwin"]["issues"][issue] == []  # the endpoint was not called: nothing to upload to
    second = create(sb, token, issue)
    assert second.status_code == 201
    assert second.headers["Location"].startswith(f"{sb.url}/issues/{issue}/attachments/")


@pytest.mark.parametrize(
    ("headers", "location"),
    [({}, None), ({"Location": ""}, ""), ([["Location", "/relative/only"]], "/relative/only")],
    ids=["no-location", "empty-location", "relative-location"],
)
def test_create_answered_201_without_a_usable_location(sb: Client, headers: Any, location: str | None):
    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault("itwin.issues.create", fail_next=[{"status": 201, "headers": headers}])
    response = create(sb, token, issue)
    assert response.status_code == 201
    assert response.headers.get("Location") == location
    assert response.content == b""


def test_a_name_can_repeat(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    pairs = [["Location", f"{sb.url}/issues/{issue}/attachments/a"], ["Location", "http://other.example/b"]]
    sb.fault("itwin.issues.create", fail_next=[{"status": 201, "headers": pairs}])
    response = create(sb, token, issue)
    assert response.raw.headers.getlist("Location") == [pairs[0][1], pairs[1][1]]


@pytest.mark.parametrize("status", [302, 307])
def test_create_answered_with_a_redirect_to_another_host(sb: Client, status: int):
    token, issue = sb.itwin_token(), sb.new_parent()
    target = "http://files.attacker.example/steal"
    sb.fault("itwin.issues.create", fail_next=[{"status": status, "headers": {"Location": target}}])
    response = create(sb, token, issue)
    assert (response.status_code, response.headers["Location"]) == (status, target)


def test_raw_reply_n_times_then_served(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault(
        "itwin.issues.create", fail_next=[{"status": 503, "headers": {"Retry-After": "0"}, "body": "busy", "count": 2}]
    )
    answers = [create(sb, token, issue) for _ in range(3)]
    assert [(r.status_code, r.text) for r in answers[:2]] == [(503, "busy"), (503, "busy")]
    assert answers[0].headers["Retry-After"] == "0"
    assert answers[2].status_code == 201


def test_listing_answered_with_html(sb: Client):
    token, form = sb.itwin_token(), sb.new_parent("forms")
    page = "<html><body>Service unavailable</body></html>"
    sb.fault("itwin.forms.list", fail_next=[{"status": 200, "headers": {"Content-Type": "text/html"}, "body": page}])
    response = listing(sb, token, form)
    assert (response.status_code, response.headers["Content-Type"], response.text) == (200, "text/html", page)
    with pytest.raises(ValueError):  # noqa: PT011 - requests' JSONDecodeError is a ValueError
        response.json()


def test_listing_with_a_next_link_to_another_host_as_a_raw_json_body(sb: Client):
    token, form = sb.itwin_token(), sb.new_parent("forms")
    body = {
        "attachments": [],
        "_links": {"next": {"href": "http://other.example/forms/x/attachments?continuationToken=1"}},
    }
    sb.fault("itwin.forms.list", fail_next=[{"body": body}])
    response = listing(sb, token, form)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == body


def test_listing_with_a_next_link_to_another_host_by_config(sb: Client):
    token, form = sb.itwin_token(), sb.new_parent("forms")
    for _ in range(2):
        create(sb, token, form, "forms")
    sb.config(next_link_base="http://other.example")
    try:
        first = listing(sb, token, form, top=1).json()
    finally:
        sb.config(next_link_base=None)
    assert len(first["attachments"]) == 1
    assert (
        first["_links"]["next"]["href"] == f"http://other.example/forms/{form}/attachments?$top=1&continuationToken=1"
    )
    again = listing(sb, token, form, top=1).json()
    assert again["_links"]["next"]["href"].startswith(sb.url)


@pytest.mark.parametrize("value", [FORMS_PAGE_TIME, "yesterday", "", 0, ["2020-10-20"]])
def test_listing_created_date_time_is_what_config_says(sb: Client, value: Any):
    token, form = sb.itwin_token(), sb.new_parent("forms")
    for _ in range(2):
        create(sb, token, form, "forms")
    sb.config(created_date_time=value)
    try:
        listed = listing(sb, token, form).json()["attachments"]
    finally:
        sb.config(created_date_time=None)
    assert [a["createdDateTime"] for a in listed] == [value, value]
    real = [a["createdDateTime"] for a in sb.inspect()["itwin"]["forms"][form]]
    assert value not in real  # stored times stay real
    assert [a["createdDateTime"] for a in listing(sb, token, form).json()["attachments"]] == sorted(real)


def test_itwin_error_echoes_the_authorization_header(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault(
        "itwin.issues.create",
        fail_next=[{"status": 401, "code": "InvalidToken", "echo_authorization": True}, {"status": 401}],
    )
    leaky = create(sb, token, issue)
    assert leaky.status_code == 401
    assert leaky.json()["error"]["code"] == "InvalidToken"
    assert f"Authorization: Bearer {token}" in leaky.json()["error"]["message"]
    plain = create(sb, token, issue)  # the same fault without the echo leaks nothing
    assert token not in plain.text


def test_aps_error_echoes_the_authorization_header(sb: Client):
    sb.fault("aps.storage", fail_next=[{"status": 500, "echo_authorization": True}])
    response = sb.http.post(
        f"{sb.url}/data/v1/projects/b.demo-project/storage",
        json={},
        headers={"Authorization": "Bearer not-a-real-aps-token"},
        timeout=10,
    )
    assert response.status_code == 500
    assert response.json()["errorCode"] == "HTTP500"
    assert response.json()["developerMessage"].endswith("Authorization: Bearer not-a-real-aps-token")


def part_url(sb: Client) -> str:
    return f"{sb.url}/__s3/nokey/1?X-Amz-Expires=0&X-Amz-Signature=x"


@pytest.mark.parametrize(
    ("endpoint", "call", "shape"),
    [
        ("itwin.issues.create", "create", lambda r: r.json()["error"]["code"] == "InternalServerError"),
        ("itwin.forms.list", "list", lambda r: r.json()["error"]["code"] == "InternalServerError"),
        (
            "aps.storage",
            "storage",
            lambda r: r.json() == {"developerMessage": "Injected fault 503.", "errorCode": "HTTP503"},
        ),
        ("aps.s3part", "part", lambda r: r.content.startswith(b"<Error><Code>HTTP503</Code>")),
    ],
)
def test_injected_errors_take_the_vendor_shape_of_their_route(sb: Client, endpoint: str, call: str, shape: Any):
    token = sb.itwin_token()
    sb.fault(endpoint, fail_next=[{"status": 503}])
    if call == "create":
        response = create(sb, token, sb.new_parent())
    elif call == "list":
        response = listing(sb, token, sb.new_parent("forms"))
    elif call == "storage":
        response = sb.http.post(f"{sb.url}/data/v1/projects/p/storage", json={}, timeout=10)
    else:
        response = sb.http.put(part_url(sb), data=b"x", timeout=10)
    assert response.status_code == 503
    assert shape(response)


@pytest.mark.parametrize(
    ("platform", "path", "shape"),
    [
        ("itwin", "/issues/ISSUE-1001/attachments", lambda r: r.json()["error"]["code"] == "RequestTooLarge"),
        ("aps", "/data/v1/projects/b.demo-project/storage", lambda r: r.json()["errorCode"] == "RequestTooLarge"),
    ],
)
def test_an_oversized_json_body_is_413_in_the_vendor_shape_and_the_connection_survives(
    sb: Client, platform: str, path: str, shape: Any
):
    token = sb.itwin_token()
    auth = sb.itwin(token) if platform == "itwin" else {"Authorization": f"Bearer {sb.aps_token()}"}
    with requests.Session() as http:
        big = http.post(f"{sb.url}{path}", data=b"{" + b" " * (1024 * 1024 + 1), headers=auth, timeout=10)
        assert big.status_code == 413
        assert shape(big)
        before = sb.inspect()["connections"]
        assert (
            http.get(f"{sb.url}/issues/ISSUE-1001/attachments", headers=sb.itwin(token), timeout=10).status_code == 200
        )
        assert sb.inspect()["connections"] == before  # the same connection answered


def test_a_chunked_upload_over_the_limit_is_drained_so_the_connection_is_reused(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    location = create(sb, token, issue).headers["Location"]
    sb.config(max_upload_bytes=1000)
    try:
        with requests.Session() as http:
            # A generator body goes chunked: the sandbox only learns it is too large while reading it.
            rejected = http.put(location, data=(b"x" * 500 for _ in range(4)), headers=sb.itwin(token), timeout=10)
            assert rejected.status_code == 413
            before = sb.inspect()["connections"]
            follow_up = http.get(f"{sb.url}/issues/{issue}/attachments", headers=sb.itwin(token), timeout=10)
            assert follow_up.status_code == 200
            assert sb.inspect()["connections"] == before
    finally:
        sb.config(max_upload_bytes=30 * 1024 * 1024)


def test_admin_routes_never_get_faults(sb: Client):
    sb.fault("*", error_rate=1.0, error_status=503)
    token_call = sb.http.post(f"{sb.url}/connect/token", data={}, timeout=10)
    assert token_call.status_code == 503
    assert sb.admin("GET", "inspect").status_code == 200
    assert sb.admin("DELETE", "faults").status_code == 204


@pytest.mark.parametrize(
    "entry",
    [
        {"status": 201, "headers": {"Location": "http://a\r\nSet-Cookie: x=1"}},
        {"status": 201, "headers": {"Content-Length": "5"}},
        {"status": 201, "headers": {"Bad Name": "x"}},
        {"status": 201, "headers": {"Location": "http://€.example"}},
        {"status": 201, "headers": "Location: x"},
        {"status": 99, "body": "x"},
        {"status": "201", "body": "x"},
        {"status": 204, "body": "not allowed"},
        {"status": 201, "body": "x", "code": "Conflict"},
        {"status": 500, "explode": True},
        "not an object",
    ],
)
def test_bad_fault_entries_are_refused_and_change_nothing(sb: Client, entry: Any):
    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault("itwin.issues.create", fail_next=[{"status": 418, "code": "Teapot"}])
    refused = sb.admin("POST", "faults", {"endpoint": "itwin.issues.create", "fail_next": [{"status": 500}, entry]})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "BadAdminRequest"
    assert create(sb, token, issue).status_code == 418  # the fault set before is still first, and alone
    assert create(sb, token, issue).status_code == 201


@pytest.mark.parametrize(
    "settings",
    [
        {"max_upload_bytes": "big"},
        {"max_upload_bytes": 0},
        {"token_lifetime": True},
        {"location_base": 5},
        {"part_url_base": 1},
        {"nope": 1},
    ],
)
def test_bad_config_is_refused(sb: Client, settings: dict[str, Any]):
    response = sb.admin("PUT", "config", settings)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadAdminRequest"


def test_after_work_runs_the_endpoint_then_answers_the_error(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault("itwin.issues.create", fail_next=[{"status": 500, "after_work": True}])
    response = create(sb, token, issue)
    assert response.status_code == 500
    assert response.json()["error"]["code"]
    (made,) = sb.inspect()["itwin"]["issues"][issue]  # the create was made all the same
    assert made["fileName"] == "a.png"


def test_after_work_with_a_drop_makes_it_then_resets(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault("itwin.issues.create", fail_next=[{"drop": True, "after_work": True}])
    with pytest.raises(requests.ConnectionError):
        create(sb, token, issue)
    assert len(sb.inspect()["itwin"]["issues"][issue]) == 1


@pytest.mark.parametrize("entry", [{"latency_ms": 10, "after_work": True}, {"status": 500, "after_work": "yes"}])
def test_after_work_needs_an_error_or_a_drop(sb: Client, entry: dict[str, Any]):
    response = sb.http.post(
        f"{sb.url}/__sandbox/faults", json={"endpoint": "itwin.issues.create", "fail_next": [entry]}, timeout=10
    )
    assert response.status_code == 400
    assert "after_work" in response.text


# -- answers cut short and uploads reset mid-body (issue 11's bad-input table) -------------------------------------


def test_short_by_cuts_the_endpoints_own_answer_short_of_its_content_length(sb: Client):
    import http.client
    import json
    from urllib.parse import urlsplit

    token, issue = sb.itwin_token(), sb.new_parent()
    sb.fault("itwin.issues.create", fail_next=[{"short_by": 64}])
    parts = urlsplit(sb.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        headers = {**sb.itwin(token), "Content-Type": "application/json"}
        connection.request("POST", f"/issues/{issue}/attachments", json.dumps({"fileName": "cut.jpg"}), headers)
        answer = connection.getresponse()
        assert (answer.status, answer.getheader("Content-Length")) == (201, "64")
        assert answer.getheader("Location")  # the headers are whole ...
        with pytest.raises(http.client.IncompleteRead):
            answer.read()  # ... the body ends short, and the connection closes
    finally:
        connection.close()
    (made,) = sb.inspect()["itwin"]["issues"][issue]  # the create itself was done
    assert made["fileName"] == "cut.jpg"


def test_a_short_raw_reply_sends_its_body_and_announces_more(sb: Client):
    token, form = sb.itwin_token(), sb.new_parent("forms")
    sb.fault("itwin.forms.list", fail_next=[{"status": 200, "body": {"attachments": []}, "short_by": 5}])
    response = requests.get(f"{sb.url}/forms/{form}/attachments", headers=sb.itwin(token), timeout=10, stream=True)
    assert int(response.headers["Content-Length"]) == len(b'{"attachments": []}') + 5
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = response.content


def test_drop_after_bytes_resets_while_the_put_body_arrives_and_stores_nothing(sb: Client):
    token, issue = sb.itwin_token(), sb.new_parent()
    location = create(sb, token, issue).headers["Location"]
    sb.fault("itwin.issues.upload", fail_next=[{"drop_after_bytes": 64 * 1024}])
    with pytest.raises(requests.ConnectionError):
        requests.put(location, data=b"r" * (4 * 1024 * 1024), headers=sb.itwin(token), timeout=10)
    (att,) = sb.inspect()["itwin"]["issues"][issue]
    assert att["size"] is None  # nothing of the cut body was kept
    assert requests.put(location, data=b"r" * 10, headers=sb.itwin(token), timeout=10).status_code in (200, 201)
