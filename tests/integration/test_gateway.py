"""The local API Gateway over real HTTP: routes, SigV4 on IAM routes, the proxy event and response as AWS has them."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests

from devstack.gateway import LocalGateway
from devstack.sigv4 import SigV4

pytestmark = pytest.mark.integration

TEMPLATE: dict[str, Any] = {
    "Resources": {
        "AttachmentsApi": {
            "Type": "AWS::Serverless::Api",
            "Properties": {"StageName": "v1", "Auth": {"DefaultAuthorizer": "AWS_IAM"}},
        },
        "AttachmentsApiFunction": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": "functions/attachments_api",
                "Handler": "app.lambda_handler",
                "Events": {
                    "ListFormAttachments": {
                        "Type": "Api",
                        "Properties": {
                            "RestApiId": {"Ref": "AttachmentsApi"},
                            "Path": "/forms/{formId}/attachments",
                            "Method": "get",
                        },
                    },
                    "Files": {
                        "Type": "Api",
                        "Properties": {
                            "RestApiId": {"Ref": "AttachmentsApi"},
                            "Path": "/files/{proxy+}",
                            "Method": "any",
                        },
                    },
                    "Webhook": {
                        "Type": "Api",
                        "Properties": {
                            "RestApiId": {"Ref": "AttachmentsApi"},
                            "Path": "/webhooks/itwin",
                            "Method": "post",
                            "Auth": {"Authorizer": "NONE"},
                        },
                    },
                },
            },
        },
    }
}


class Recorder:
    """The injected function: keeps each event and answers what the test set (or raises it)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.response: Any = {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    def __call__(self, function: str, event: dict[str, Any]) -> Any:
        assert function == "AttachmentsApiFunction"
        self.events.append(event)
        if isinstance(self.response, Exception):
            raise self.response
        return self.response

    @property
    def event(self) -> dict[str, Any]:
        return self.events[-1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def gateway(recorder: Recorder, log: io.StringIO) -> Iterator[LocalGateway]:
    with LocalGateway(TEMPLATE, invoke=recorder, secrets={"testing": "testing"}, log=log) as gw:
        yield gw


def error(response: requests.Response) -> tuple[int, str, str]:
    return response.status_code, response.headers.get("x-amzn-ErrorType", ""), response.json()["message"]


def test_unsigned_requests_to_an_iam_route_lack_the_token(gateway, recorder):
    answer = requests.get(f"{gateway.url}/forms/F-1/attachments", timeout=10)
    assert error(answer) == (403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    assert uuid.UUID(answer.headers["x-amzn-RequestId"])
    assert recorder.events == []


def test_a_wrong_secret_is_an_invalid_signature(gateway, recorder):
    answer = requests.get(f"{gateway.url}/forms/F-1/attachments", auth=SigV4("testing", "wrong"), timeout=10)
    status, kind, message = error(answer)
    assert (status, kind) == (403, "InvalidSignatureException")
    assert message.startswith("The request signature we calculated does not match the signature you provided.")
    assert recorder.events == []


def test_an_unknown_access_key_is_not_recognised(gateway):
    answer = requests.get(f"{gateway.url}/forms/F-1/attachments", auth=SigV4("AKIDUNKNOWN", "x"), timeout=10)
    assert error(answer) == (
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_a_signature_from_another_time_has_expired(gateway):
    an_hour_ago = SigV4(clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    status, kind, message = error(requests.get(f"{gateway.url}/forms/F-1/attachments", auth=an_hour_ago, timeout=10))
    assert (status, kind) == (403, "InvalidSignatureException")
    assert message.startswith("Signature expired: ")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nothing/here"),
        ("GET", "/forms/F-1"),
        ("POST", "/forms/F-1/attachments"),  # a path with a route, but not for this method
        ("GET", "/files"),  # {proxy+} needs at least one segment
    ],
)
def test_unknown_routes_lack_the_token_even_when_signed(gateway, recorder, method, path):
    answer = requests.request(method, f"{gateway.url}{path}", auth=SigV4(), timeout=10)
    assert error(answer) == (403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    assert recorder.events == []


def test_another_stage_lacks_the_token(gateway):
    other = gateway.url.removesuffix("/v1") + "/Prod/forms/F-1/attachments"
    assert error(requests.get(other, auth=SigV4(), timeout=10))[0] == 403


def test_a_signed_request_reaches_the_function_as_api_gateway_builds_the_event(gateway, recorder, log):
    form = "F 1/ü"  # a space, a slash and unicode: percent-encoded in the URL, decoded in pathParameters
    url = f"{gateway.url}/forms/{quote(form, safe='')}/attachments"
    answer = requests.get(
        url,
        params=[("q", "a b"), ("tag", "x"), ("tag", "y$z"), ("empty", "")],
        headers={"X-Custom": "1", "User-Agent": "field-app/1.0", "X-Amzn-Trace-Id": "Root=1-abc"},
        auth=SigV4(),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    event = recorder.event
    assert event["resource"] == "/forms/{formId}/attachments"
    # REST APIs hand the Lambda the path as it came, still percent-encoded; only pathParameters are decoded.
    assert event["path"] == f"/forms/{quote(form, safe='')}/attachments"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"formId": form}
    assert event["queryStringParameters"] == {"q": "a b", "tag": "y$z", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"q": ["a b"], "tag": ["x", "y$z"], "empty": [""]}
    assert event["stageVariables"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    assert event["headers"]["X-Custom"] == "1"
    assert event["multiValueHeaders"]["X-Custom"] == ["1"]
    assert event["headers"]["X-Forwarded-Proto"] == "http"
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert not any(name.lower() == "x-amzn-trace-id" for name in event["headers"])
    context = event["requestContext"]
    assert context["requestId"] == answer.headers["x-amzn-RequestId"]
    assert context["resourcePath"] == "/forms/{formId}/attachments"
    assert context["path"].startswith("/v1/forms/")
    assert context["stage"] == "v1"
    assert context["httpMethod"] == "GET"
    assert context["accountId"] == "123456789012"
    assert context["protocol"] == "HTTP/1.1"
    assert isinstance(context["requestTimeEpoch"], int)
    assert context["apiId"] == gateway.api_id
    identity = context["identity"]
    assert identity["accessKey"] == identity["caller"] == identity["user"] == "testing"
    assert identity["userArn"] == "arn:aws:iam::123456789012:user/testing"
    assert identity["accountId"] == "123456789012"
    assert identity["sourceIp"] == "127.0.0.1"
    assert identity["userAgent"] == "field-app/1.0"
    # Every request gets its own id.
    requests.get(url, auth=SigV4(), timeout=10)
    assert recorder.events[0]["requestContext"]["requestId"] != recorder.events[1]["requestContext"]["requestId"]
    assert "GET /v1/forms/" in log.getvalue()
    assert " 200 " in log.getvalue()


def test_a_proxy_route_takes_the_rest_of_the_path_for_any_method(gateway, recorder):
    body = json.dumps({"name": "plan ü.pdf"}).encode()
    answer = requests.put(f"{gateway.url}/files/a/b%20c/d.pdf", data=body, auth=SigV4(), timeout=10)
    assert answer.status_code == 200, answer.text
    assert recorder.event["resource"] == "/files/{proxy+}"
    assert recorder.event["pathParameters"] == {"proxy": "a/b c/d.pdf"}
    assert recorder.event["httpMethod"] == "PUT"
    assert recorder.event["body"] == body.decode()
    assert recorder.event["isBase64Encoded"] is False
    assert recorder.event["queryStringParameters"] is None


def test_a_binary_body_arrives_base64_encoded(gateway, recorder):
    data = bytes(range(256))
    answer = requests.post(f"{gateway.url}/files/blob", data=data, auth=SigV4(), timeout=10)
    assert answer.status_code == 200, answer.text
    assert recorder.event["isBase64Encoded"] is True
    assert base64.b64decode(recorder.event["body"]) == data


def test_a_changed_body_fails_the_signature(gateway, recorder):
    prepared = requests.Request("POST", f"{gateway.url}/files/x", data=b"signed", auth=SigV4()).prepare()
    prepared.body = b"sneaky"
    prepared.headers["Content-Length"] = "6"
    with requests.Session() as session:
        answer = session.send(prepared, timeout=10)
    assert error(answer)[:2] == (403, "InvalidSignatureException")
    assert recorder.events == []


def test_the_response_goes_back_with_both_header_kinds_merged(gateway, recorder):
    recorder.response = {
        "statusCode": 201,
        "headers": {"X-One": "1", "X-Both": "single"},
        "multiValueHeaders": {"X-Many": ["a", "b"], "X-Both": ["multi"]},
        "body": '{"ok": true}',
        "isBase64Encoded": False,
    }
    answer = requests.get(f"{gateway.url}/forms/F/attachments", auth=SigV4(), timeout=10)
    assert answer.status_code == 201
    assert answer.json() == {"ok": True}
    assert answer.headers["X-One"] == "1"
    assert answer.headers["X-Many"] == "a, b"
    assert answer.headers["X-Both"] == "multi"
    assert answer.headers["Content-Type"] == "application/json"


def test_a_base64_response_body_is_decoded(gateway, recorder):
    data = b"\x89PNG\r\n\x1a\n\x00\xff"
    recorder.response = {
        "statusCode": 200,
        "headers": {"Content-Type": "image/png"},
        "body": base64.b64encode(data).decode(),
        "isBase64Encoded": True,
    }
    answer = requests.get(f"{gateway.url}/files/p.png", auth=SigV4(), timeout=10)
    assert answer.content == data
    assert answer.headers["Content-Type"] == "image/png"


def test_a_redirect_passes_through_unchanged(gateway, recorder):
    recorder.response = {"statusCode": 302, "headers": {"Location": "https://example.com/file?sig=abc"}, "body": ""}
    answer = requests.get(f"{gateway.url}/files/f", auth=SigV4(), timeout=10, allow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "https://example.com/file?sig=abc"


@pytest.mark.parametrize(
    "response",
    [
        RuntimeError("boom"),
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": "teapot"},
        {"statusCode": 200, "body": "x", "unexpected": 1},
        {"statusCode": 200, "headers": {"X-Bad": "a\r\nSet-Cookie: x=1"}},
        {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
        "a string",
        None,
    ],
    ids=["raises", "dict-body", "bad-status", "extra-key", "header-injection", "bad-base64", "string", "none"],
)
def test_a_failing_function_or_malformed_response_is_a_502(gateway, recorder, log, response):
    recorder.response = response
    answer = requests.get(f"{gateway.url}/forms/F/attachments", auth=SigV4(), timeout=10)
    assert answer.status_code == 502
    assert answer.json() == {"message": "Internal server error"}
    assert "Set-Cookie" not in answer.headers


def test_a_response_over_lambdas_6_mb_is_a_502(gateway, recorder):
    recorder.response = {"statusCode": 200, "body": "x" * (6 * 1024 * 1024 + 1)}
    answer = requests.get(f"{gateway.url}/forms/F/attachments", auth=SigV4(), timeout=30)
    assert answer.status_code == 502
    assert answer.json() == {"message": "Internal server error"}


def test_a_request_over_10_mb_is_too_long(gateway, recorder):
    answer = requests.post(f"{gateway.url}/webhooks/itwin", data=b"x" * (10 * 1024 * 1024 + 1), timeout=30)
    assert answer.status_code == 413
    assert answer.json() == {"message": "Request Too Long"}
    assert recorder.events == []


def test_a_slow_function_times_out_after_it_returns(recorder, log):
    def slow(function: str, event: dict[str, Any]) -> Any:
        time.sleep(0.05)
        return recorder(function, event)

    with LocalGateway(TEMPLATE, invoke=slow, log=log, timeout_s=0.01) as gw:
        answer = requests.post(f"{gw.url}/webhooks/itwin", data=b"{}", timeout=10)
    assert answer.status_code == 504
    assert answer.json() == {"message": "Endpoint request timed out"}


def test_the_none_route_works_unsigned(gateway, recorder):
    answer = requests.post(f"{gateway.url}/webhooks/itwin", json={"event": "x"}, timeout=10)
    assert answer.status_code == 200
    assert recorder.event["resource"] == "/webhooks/itwin"
    assert recorder.event["requestContext"]["identity"]["accessKey"] is None
    assert json.loads(recorder.event["body"]) == {"event": "x"}


def test_the_access_log_never_shows_the_authorization(gateway, recorder, log):
    prepared = requests.Request("GET", f"{gateway.url}/forms/F/attachments", auth=SigV4()).prepare()
    signature = prepared.headers["Authorization"].rpartition("Signature=")[2]
    with requests.Session() as session:
        assert session.send(prepared, timeout=10).status_code == 200
    requests.get(f"{gateway.url}/forms/F/attachments", auth=SigV4("testing", "wrong"), timeout=10)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("GET /v1/forms/F/attachments 200 ")
    assert lines[0].endswith(" testing")
    assert lines[1].startswith("GET /v1/forms/F/attachments 403 ")
    assert lines[1].endswith(" -")
    assert signature not in log.getvalue()
    assert "AWS4-HMAC-SHA256" not in log.getvalue()
    assert "Credential" not in log.getvalue()


def test_an_api_without_a_default_authorizer_warns_of_its_open_routes(recorder):
    template = json.loads(json.dumps(TEMPLATE))
    del template["Resources"]["AttachmentsApi"]["Properties"]["Auth"]
    log = io.StringIO()
    with LocalGateway(template, invoke=recorder, log=log) as gw:
        assert requests.get(f"{gw.url}/forms/F/attachments", timeout=10).status_code == 200
    warning = log.getvalue().splitlines()[0]
    assert warning.startswith("WARNING: AttachmentsApi has no DefaultAuthorizer")
    assert "GET /forms/{formId}/attachments" in warning
    assert "ANY /files/{proxy+}" in warning
    assert "/webhooks/itwin" not in warning  # it opted out on purpose


def test_the_url_names_the_stage_and_the_port(gateway):
    assert gateway.url == f"http://127.0.0.1:{gateway.port}/v1"
    assert gateway.port != 0
