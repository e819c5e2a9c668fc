"""Error mapping, driven by a table of every documented status and code."""

from __future__ import annotations

import json

import pytest

from relay import errors as e
from relay.auth.tokens import oauth_error_fields
from relay.vendors.aps import aps_error_fields
from relay.vendors.itwin import itwin_error_fields

ITWIN_401 = {
    "error": {"code": "HeaderNotFound", "message": "Header Authorization was not found in the request. Access denied."}
}
ITWIN_404 = {"error": {"code": "IssueNotFound", "message": "Requested issue is not available.", "target": "id"}}
FORMS_404 = {"error": {"code": "FormDataNotFound", "message": "Requested form data is not available.", "target": "id"}}
ITWIN_422 = {
    "error": {
        "code": "InvalidAttachmentRequest",
        "message": "Cannot create attachment.",
        "details": [
            {"code": "MissingRequiredProperty", "message": "Required property is missing.", "target": "fileName"}
        ],
    }
}
ITWIN_429 = {"error": {"code": "RateLimitExceeded", "message": "The client sent more requests than allowed."}}
FORMS_429 = {"error": {"code": "TooManyRequests", "message": "More requests were received than allowed."}}
TOO_LARGE = {"error": {"code": "RequestTooLarge", "message": "Too large."}}
NOT_ATTACHED = {"error": {"code": "AttachmentNotFound", "message": "Requested attachment is not available."}}
NO_FILE = {"error": {"code": "FileNotFound", "message": "No file uploaded."}}
APS = {"developerMessage": "The token is invalid.", "errorCode": "AUTH-006"}
OAUTH = {"error": "invalid_grant", "error_description": "The refresh token is invalid or used."}
APS_400 = {"developerMessage": "name too long", "errorCode": "BAD_INPUT"}
PARSERS = {id(APS): aps_error_fields, id(APS_400): aps_error_fields, id(OAUTH): oauth_error_fields}


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "target"),
    [
        (401, ITWIN_401, e.AuthenticationError, "HeaderNotFound", None),
        (401, APS, e.AuthenticationError, "AUTH-006", None),
        (403, None, e.PermissionDeniedError, "Forbidden", None),
        (404, ITWIN_404, e.NotFoundError, "IssueNotFound", "id"),
        (404, FORMS_404, e.NotFoundError, "FormDataNotFound", "id"),
        (404, NOT_ATTACHED, e.NotFoundError, "AttachmentNotFound", None),
        (404, NO_FILE, e.NotFoundError, "FileNotFound", None),
        (400, OAUTH, e.InvalidRequestError, "invalid_grant", None),
        (
            400,
            APS_400,
            e.InvalidRequestError,
            "BAD_INPUT",
            None,
        ),
        (409, None, e.InvalidRequestError, "InvalidRequest", None),
        (413, TOO_LARGE, e.TooLargeError, "RequestTooLarge", None),
        (422, ITWIN_422, e.InvalidRequestError, "InvalidAttachmentRequest", None),
        (429, ITWIN_429, e.RateLimitedError, "RateLimitExceeded", None),
        (429, FORMS_429, e.RateLimitedError, "TooManyRequests", None),
        (500, None, e.ServerError, "ServerError", None),
        (502, "<html>Bad gateway</html>", e.ServerError, "ServerError", None),
        (503, {"error": {"code": "ServiceUnavailable", "message": "down"}}, e.ServerError, "ServiceUnavailable", None),
    ],
)
def test_error_from_response_maps_status_and_vendor_code(status, body, cls, code, target):
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    fields = PARSERS.get(id(body), itwin_error_fields)  # each vendor client reads its own error shape
    error = e.error_from_response(status, raw, {"x-correlation-id": "corr-1"}, fields)
    assert type(error) is cls
    assert error.http_status == status
    assert error.code == code
    assert error.target == target
    assert error.request_id == "corr-1"
    assert str(status) in str(error)


def test_422_keeps_vendor_details():
    error = e.error_from_response(422, json.dumps(ITWIN_422).encode(), fields=itwin_error_fields)
    assert error.details[0]["code"] == "MissingRequiredProperty"
    assert error.details[0]["target"] == "fileName"


@pytest.mark.parametrize(
    "body", [None, b"", b"not json", b"[1,2]", b'{"error": 42}', b'{"error": {"code": 5}}', b"\xff\xfe"]
)
@pytest.mark.parametrize("fields", [itwin_error_fields, aps_error_fields, oauth_error_fields, e.generic_error_fields])
def test_missing_or_malformed_body_still_maps(body, fields):
    error = e.error_from_response(404, body, fields=fields)
    assert isinstance(error, e.NotFoundError)
    assert error.code == "NotFound"
    assert "404" in error.message


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 10 ", 10.0),
        ("0.5", 0.5),
        ("-1", 0.0),
        ("Wed, 21 Oct 2015", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # an HTTP-date in the past: now
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),  # a date that states no zone names no instant
        ("nan", None),
        ("inf", None),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_parsing(header, expected):
    headers = {"Retry-After": header} if header is not None else {}
    assert e.error_from_response(429, b"", headers).retry_after == expected


def test_retry_after_as_an_http_date_is_the_seconds_until_it():
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert e.parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=lambda: now) == 30.0
    assert e.parse_retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now=lambda: now) == 86400.0


def test_status_to_class_covers_every_range():
    assert e.error_class_for(418) is e.InvalidRequestError
    assert e.error_class_for(599) is e.ServerError
    assert e.error_class_for(302) is e.UnexpectedStatusError


def test_a_vendor_code_is_cut_to_what_an_s3_tag_holds():
    body = json.dumps({"error": {"code": "Bad <code> with spaces & 'quotes'" + "x" * 100, "message": "m"}})
    code = e.error_from_response(400, body, fields=itwin_error_fields).code
    assert len(code) <= 64
    assert set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (e.InvalidUploadError("x"), "rejected"),
        (e.TooLargeError("x"), "rejected"),
        (e.InvalidRequestError("x"), "rejected"),
        (e.NotFoundError("x"), "failed"),
        (e.PermissionDeniedError("x"), "failed"),
        (e.AuthenticationError("x"), "failed"),
        (e.UnsafeLocationError("x"), "failed"),
        (e.MissingLocationError("x"), "failed"),
        (e.UnexpectedStatusError("x"), "failed"),
        (e.RateLimitedError("x"), "retry"),
        (e.ServerError("x"), "retry"),
        (e.VendorConnectionError("x"), "retry"),
        (e.MalformedResponseError("x"), "retry"),
        (e.TokenEndpointError("x"), "retry"),
        (e.ConfigurationError("x"), "retry"),
        (e.ObjectStoreError("x"), "retry"),
        (e.RecordStoreError("x"), "retry"),
        (e.UnresolvedCreateError("x"), "retry"),
        (e.ClaimConflictError("x"), "retry"),
        (e.ObjectGoneError("x"), "skipped"),
        (e.SupersededError("x"), "skipped"),
        (KeyError("surprise"), "retry"),
    ],
)
def test_every_error_carries_its_outcome(error, outcome):
    assert e.outcome_of(error) == outcome
