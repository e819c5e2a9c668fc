"""The iTwin client over a scripted session: every URL it builds, every answer it accepts or refuses."""

from __future__ import annotations

import pytest

from relay import errors as e
from relay.transport.requestor import Requestor
from relay.transport.retry import RetryPolicy
from relay.vendors.itwin import ITwinClient, itwin_error_fields
from tests.unit.fakes import FakeResponse, FakeSession

BASE = "https://api.bentley.com"


class Tokens:
    def token(self):
        return "tok-SECRET"

    def invalidate(self):
        pass

    def use_deadline(self, deadline):
        pass


def client(script, hosts=()):
    session = FakeSession(script)
    requestor = Requestor(
        BASE,
        tokens=Tokens(),
        token_hosts=hosts,
        session=session,  # type: ignore[arg-type]
        policy=RetryPolicy(jitter=lambda d: 0),
        error_fields=itwin_error_fields,
    )
    return ITwinClient(requestor), session


def test_every_url_segment_is_quoted():
    itwin, session = client([FakeResponse(201, headers={"Location": "/issues/A%231%3Fx/attachments/att%201"})])
    created = itwin.create_attachment("issues", "A#1?x", "a.jpg")
    assert session.sent[0][1] == f"{BASE}/issues/A%231%3Fx/attachments"
    assert created.attachment_id == "att 1"  # unquoted from the documented upload URL
    assert itwin.attachment_url("forms", "F #2", "id?") == f"{BASE}/forms/F%20%232/attachments/id%3F"


@pytest.mark.parametrize(
    ("location", "attachment_id"),
    [
        (f"{BASE}/issues/I-1/attachments/abc", "abc"),
        ("/issues/I-1/attachments/abc", "abc"),  # relative: resolved against the API base
        (f"{BASE}:443/issues/I-1/attachments/abc/", "abc"),
        ("https://files.bentley.com/blob/xyz", None),  # an allowed host that does not name the id
        (f"{BASE}/issues/OTHER/attachments/abc", None),  # another parent's path: never trusted as ours
    ],
)
def test_the_id_comes_only_from_the_documented_upload_url(location, attachment_id):
    itwin, _ = client([FakeResponse(201, headers={"Location": location})], hosts=["files.bentley.com"])
    assert itwin.create_attachment("issues", "I-1", "a.jpg").attachment_id == attachment_id


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, e.MissingLocationError),
        ({"Location": "  "}, e.MissingLocationError),
        ({"Location": "http://127.0.0.1:9\\@api.bentley.com/issues/I/attachments/a"}, e.UnsafeLocationError),
        ({"Location": "http://api.bentley.com/issues/I/attachments/a"}, e.UnsafeLocationError),
        ({"Location": "ftp://api.bentley.com/x"}, e.UnsafeLocationError),
    ],
)
def test_an_unusable_location_is_a_named_error(headers, error):
    itwin, _ = client([FakeResponse(201, headers=headers)])
    with pytest.raises(error):
        itwin.create_attachment("issues", "I", "a.jpg")


def test_listing_follows_next_links_and_refuses_one_on_another_host():
    page1 = {"attachments": [{"id": "a"}], "_links": {"next": {"href": f"{BASE}/issues/I/attachments?ct=2"}}}
    page2 = {"attachments": [{"id": "b"}], "_links": {"next": {"href": "https://evil.example/steal"}}}
    itwin, session = client([FakeResponse(200, page1), FakeResponse(200, page2)])
    listed = itwin.list_attachments("issues", "I")
    assert [next(listed)["id"], next(listed)["id"]] == ["a", "b"]
    with pytest.raises(e.UnsafeLocationError):
        next(listed)
    assert [s[1] for s in session.sent] == [f"{BASE}/issues/I/attachments", f"{BASE}/issues/I/attachments?ct=2"]


def test_listing_follows_a_continuation_token_in_the_body():
    page1 = {"attachments": [{"id": "a"}], "continuationToken": "t-2"}
    page2 = {"attachments": [{"id": "b"}]}
    itwin, session = client([FakeResponse(200, page1), FakeResponse(200, page2)])
    assert [a["id"] for a in itwin.list_attachments("forms", "F")] == ["a", "b"]
    assert [s[2].get("params") for s in session.sent] == [
        {"$top": 50},
        {"$top": 50, "continuationToken": "t-2"},
    ]


def test_a_looping_next_link_is_bounded():
    from relay.vendors import itwin as module

    looping = {"attachments": [], "_links": {"next": {"href": f"{BASE}/issues/I/attachments?again"}}}
    itwin, _ = client([FakeResponse(200, looping)] * (module.MAX_PAGES + 1))
    with pytest.raises(e.MalformedResponseError, match="pages"):
        list(itwin.list_attachments("issues", "I"))


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b"[]", b'{"attachments": "x"}'])
def test_a_listing_that_is_not_the_documented_object_is_a_retryable_malformed_response(body):
    itwin, _ = client([FakeResponse(200, body)])
    with pytest.raises(e.MalformedResponseError) as info:
        list(itwin.list_attachments("issues", "I"))
    assert info.value.outcome == "retry"


def test_upload_accepts_200_or_201_and_never_a_redirect():
    itwin, session = client([FakeResponse(201), FakeResponse(307, headers={"Location": "https://evil.example/"})])
    itwin.upload(f"{BASE}/issues/I/attachments/a", lambda: b"abc", 3)
    assert session.sent[0][2]["headers"]["Content-Length"] == "3"
    with pytest.raises(e.UnexpectedStatusError):
        itwin.upload(f"{BASE}/issues/I/attachments/a", lambda: b"abc", 3)
    assert all(s[2]["allow_redirects"] is False for s in session.sent)


def test_an_echoed_authorization_header_is_redacted_from_the_error():
    body = {"error": {"code": "Forbidden", "message": "you sent Authorization: Bearer tok-SECRET"}}
    itwin, _ = client([FakeResponse(403, body)])
    with pytest.raises(e.PermissionDeniedError) as info:
        itwin.delete_attachment("issues", "I", "a")
    assert "tok-SECRET" not in str(info.value)
    assert "tok-SECRET" not in (info.value.body or "")
    assert "[redacted]" in str(info.value)


@pytest.mark.parametrize("raw_id", ["%2E%2E", ".", "a%2Fb", "a%5Cb", "%00"])
def test_an_id_that_could_address_something_else_is_never_taken(raw_id):
    """`..` would make a cleanup DELETE the issue itself once urllib3 resolves the dot segment."""
    itwin, _ = client([FakeResponse(201, headers={"Location": f"/issues/I-1/attachments/{raw_id}"})])
    assert itwin.create_attachment("issues", "I-1", "a.jpg").attachment_id is None
    with pytest.raises(e.MalformedResponseError):
        itwin.delete_attachment("issues", "I-1", "..")


def test_a_capped_part_of_an_unexpected_body_is_read():
    from relay.transport import requestor

    huge = FakeResponse(500, b"x" * (requestor.ERROR_BODY_LIMIT * 4))
    itwin, _ = client([huge], hosts=())
    itwin._requestor.policy = RetryPolicy(max_attempts=1)
    with pytest.raises(e.ServerError) as info:
        itwin.delete_attachment("issues", "I", "a")
    assert len(info.value.body or "") <= requestor.ERROR_BODY_LIMIT


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"x-request-id": "Bearer tok-SECRET"}, {"error": {"code": "Forbidden", "message": "no"}}),
        ({}, {"error": {"code": "Bearer tok-SECRET-and-more-text-so-the-cut-would-keep-a-prefix", "message": "no"}}),
        ({}, {"error": {"code": "X", "message": "no", "details": [{"code": "D", "inner": {"auth": "tok-SECRET"}}]}}),
    ],
)
def test_no_part_of_an_echoed_token_survives_in_any_field(headers, body):
    itwin, _ = client([FakeResponse(403, body, headers=headers)])
    with pytest.raises(e.PermissionDeniedError) as info:
        itwin.delete_attachment("issues", "I", "a")
    error = info.value
    for text in (str(error), error.code, error.request_id or "", error.body or "", repr(error.details)):
        assert "tok-SECRET" not in text
        assert "tok-SEC" not in text
