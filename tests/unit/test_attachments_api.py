"""The Attachments API: its error table, its id rule, and the resolver end to end in-process
(API Gateway REST proxy events, a fake iTwin, moto S3 and DynamoDB, a fake SQS)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from itertools import count
from typing import Any
from urllib.parse import quote

import pytest

from relay import errors as e
from relay.aws.archive import ArchiveStore
from relay.aws.jobs import ArchiveJobs
from relay.aws.queues import WorkQueue
from relay.flows.archive import Archiver
from relay.flows.attachments_api import AttachmentsService, app, error_answer, openapi_document, use_service
from relay.flows.attachments_api.service import check_id
from relay.settings import Settings
from tests.unit.archive_fakes import ArchiveItwin, FakeSqs, MiB, blob

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/ArchiveQueue"

# -- the error table -------------------------------------------------------------------------------

CONFIGURATION = "configuration"


def _vendor(cls: type[e.VendorError], status: int | None, code: str, **kwargs: Any) -> e.VendorError:
    return cls("vendor says no", http_status=status, code=code, **kwargs)


def _refused_token() -> e.TokenEndpointError:
    error = e.TokenEndpointError("token endpoint answered 400: invalid_client", code="invalid_client")
    error.refused = True
    return error


@pytest.mark.parametrize(
    ("error", "status", "code", "headers", "field"),
    [
        (_vendor(e.NotFoundError, 404, "FormDataNotFound"), 404, "FormDataNotFound", {}, None),
        (_vendor(e.NotFoundError, 404, "IssueNotFound"), 404, "IssueNotFound", {}, None),
        (_vendor(e.NotFoundError, 404, "AttachmentNotFound"), 404, "AttachmentNotFound", {}, None),
        (_vendor(e.NotFoundError, 404, "FileNotFound"), 404, "FileNotFound", {}, None),
        (e.ArchiveJobNotFoundError("no job"), 404, "ArchiveJobNotFound", {}, None),
        (_vendor(e.AuthenticationError, 401, "HeaderNotFound"), 502, "ItwinCredentialsRejected", {}, None),
        (_vendor(e.PermissionDeniedError, 403, "Forbidden"), 502, "ItwinCredentialsRejected", {}, None),
        (_refused_token(), 502, "ItwinCredentialsRejected", {}, None),
        (e.TokenEndpointError("token endpoint answered 503"), 503, "ItwinUnavailable", {"Retry-After": "5"}, None),
        (
            _vendor(e.RateLimitedError, 429, "TooManyRequests", retry_after=7),
            503,
            "ItwinRateLimited",
            {"Retry-After": "7"},
            None,
        ),
        (
            _vendor(e.RateLimitedError, 429, "RateLimitExceeded", retry_after=0.2),
            503,
            "ItwinRateLimited",
            {"Retry-After": "1"},
            None,
        ),
        (_vendor(e.RateLimitedError, 429, "TooManyRequests"), 503, "ItwinRateLimited", {"Retry-After": "5"}, None),
        (_vendor(e.ServerError, 500, "ServerError"), 503, "ItwinUnavailable", {"Retry-After": "5"}, None),
        (_vendor(e.ServerError, 503, "ServiceUnavailable"), 503, "ItwinUnavailable", {"Retry-After": "5"}, None),
        (e.VendorConnectionError("reset", code="Timeout"), 503, "ItwinUnavailable", {"Retry-After": "5"}, None),
        (
            e.VendorConnectionError("broke", code="DownloadInterrupted"),
            503,
            "ItwinUnavailable",
            {"Retry-After": "5"},
            None,
        ),
        (
            _vendor(e.MalformedResponseError, 200, "MalformedResponse"),
            503,
            "ItwinUnavailable",
            {"Retry-After": "5"},
            None,
        ),
        (e.InvalidInputError("formId is too long", field="formId"), 422, "ValidationError", {}, "formId"),
        (e.ObjectStoreError("HEAD failed"), 503, "S3Error", {"Retry-After": "5"}, None),
        (e.RecordStoreError("jobs table"), 503, "RecordStoreError", {"Retry-After": "5"}, None),
        (e.QueueError("queue"), 503, "QueueError", {"Retry-After": "5"}, None),
        (e.ConfigurationError("RELAY_ARCHIVE_BUCKET is not set"), 500, "ConfigurationError", {}, None),
        (_vendor(e.InvalidRequestError, 400, "InvalidRequest"), 502, "InvalidRequest", {}, None),
        (KeyError("secret-looking detail"), 500, "InternalError", {}, None),
        (RuntimeError("Bearer abc.def"), 500, "InternalError", {}, None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_every_error_has_one_answer(error, status, code, headers, field):
    got_status, got_code, message, got_headers, got_field = error_answer(error)
    assert (got_status, got_code, got_headers, got_field) == (status, code, headers, field)
    assert message
    if code == "ItwinCredentialsRejected":
        assert CONFIGURATION in message
        assert "not your request" in message
    if status == 500 and not isinstance(error, e.RelayError):
        assert str(error.args[0]) not in message  # nothing of the exception reaches the caller
        assert "request id" in message


def test_a_vendor_404_message_is_the_vendors():
    error = e.NotFoundError("Requested form data is not available.", http_status=404, code="FormDataNotFound")
    assert error_answer(error)[2] == "Requested form data is not available."


# -- ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["x" * 129, "a/b", "a\x00b", "a\u202eb", "a\nb", ".", "..", "", "   "],
    ids=["129-chars", "slash", "nul", "rtl-override", "newline", "dot", "dot-dot", "empty", "blank"],
)
def test_an_unusable_id_is_refused_naming_its_field(value):
    with pytest.raises(e.InvalidInputError) as raised:
        check_id("formId", value)
    assert raised.value.field == "formId"
    assert error_answer(raised.value)[:2] == (422, "ValidationError")


@pytest.mark.parametrize(
    "value",
    [
        "x" * 128,
        "Bericht-über",
        "現場",
        "with spaces",
        "a.b",
        "...",
        "XZzxOCC8sVvUcgeXz1Ih_exlLgPfRTpAu",
        "a\\b",
        "👨\u200d👩\u200d👧",
        "A\xa0B",
    ],
)
def test_a_usable_id_is_accepted_as_it_is(value):
    """The upload keys' rule: an issue or form one can upload into is one the API reaches."""
    assert check_id("formId", value) == value
    from relay.flows.s3_to_itwin.targets import parse_target

    assert parse_target(f"forms/{value}/photo.jpg").parent_id == value


# -- the resolver, end to end ----------------------------------------------------------------------

# iTwin's documented listing (Forms, "Get form data attachments"); the page reuses one id, ours do not.
SEED: list[dict[str, Any]] = [
    {
        "id": "XZzxOCC8sVvUcgeXz1Ih_exlLgPfRTpAuShXz1cTpAu",
        "fileName": "CrackedConcrete.png",
        "createdDateTime": "2020-10-20T16:16:30.6704320Z",
        "caption": "Picture of the cracked concrete",
        "binding": None,
        "type": "png",
    },
    {
        "id": "YZzxOCC8sVvUcgeXz1Ih_exlLgPfRTpAuShXz1cTpAv",
        "fileName": "StreetView.png",
        "createdDateTime": "2020-10-20T16:08:30.2804722Z",
        "caption": "Picture showing the bridge from the perspective of an approaching car",
        "binding": "Location",
        "type": "png",
    },
    {
        "id": "att-3",
        "fileName": "Bericht über Schäden.pdf",
        "createdDateTime": "2020-10-21T09:00:00.0000000Z",
        "caption": None,
        "binding": None,
        "type": "pdf",
    },
]
FORM = "form-1"
ROUTES = {
    "attachments": "/{kind}/{{parent}}/attachments",
    "file": "/{kind}/{{parent}}/attachments/{{attachmentId}}/file",
    "archive": "/{kind}/{{parent}}/archive",
}


class Steps:
    """A clock the test moves: each reading returns `now`, then moves it on by `step`."""

    def __init__(self, now: float = 1e9, step: float = 0.0) -> None:
        self.now, self.step = now, step

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


class Api:
    def __init__(self, aws: Any, itwin: ArchiveItwin, sqs: FakeSqs, clock: Steps, context: Any) -> None:
        self.aws, self.itwin, self.sqs, self.clock, self.context = aws, itwin, sqs, clock, context
        settings = Settings.load(
            {},
            archive_bucket=aws.bucket,
            archive_jobs_table=aws.tables["ArchiveJobsTable"],
            archive_queue_url=QUEUE_URL,
        )
        ids = count(1)
        self.store = ArchiveStore(aws.s3, aws.bucket, part_size=5 * MiB)
        self.service = AttachmentsService(
            settings,
            Archiver(itwin, self.store),
            ArchiveJobs(settings.archive_jobs_table, aws.dynamodb, new_id=lambda: f"job-{next(ids)}"),
            WorkQueue(sqs, QUEUE_URL),
            clock=clock,
        )
        self.requests = count(1)

    def call(self, method: str, path: str, resource: str | None = None, **params: str) -> dict[str, Any]:
        """What API Gateway's REST proxy integration would hand the function (routing reads `path`)."""
        request_id = f"req-{next(self.requests)}"
        event = {
            "resource": resource or path,
            "path": path,
            "httpMethod": method,
            "headers": {"Accept": "application/json", "Host": "abc123.execute-api.us-east-1.amazonaws.com"},
            "multiValueHeaders": {"Accept": ["application/json"]},
            "queryStringParameters": None,
            "multiValueQueryStringParameters": None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "httpMethod": method,
                "path": f"/prod{path}",
                "protocol": "HTTP/1.1",
                "requestId": request_id,
                "resourcePath": resource or path,
                "stage": "prod",
                "identity": {"sourceIp": "203.0.113.9", "userArn": "arn:aws:iam::123456789012:user/auditor"},
            },
            "body": None,
            "isBase64Encoded": False,
        }
        answer: dict[str, Any] = app.resolve(event, self.context)
        answer["json"] = json.loads(answer["body"]) if answer.get("body") else None
        # The REST resolver answers multiValueHeaders: one value each here.
        answer["headers"] = {name: values[-1] for name, values in answer.get("multiValueHeaders", {}).items()}
        answer["requestId"] = request_id
        return answer

    def route(self, method: str, what: str, kind: str, parent: str, attachment_id: str | None = None) -> dict[str, Any]:
        path = ROUTES[what].format(kind=kind).format(parent=quote(parent, safe=""), attachmentId=attachment_id)
        name = "formId" if kind == "forms" else "issueId"
        resource = ROUTES[what].format(kind=kind).replace("{parent}", "{" + name + "}")
        params = {name: parent, **({"attachmentId": attachment_id} if attachment_id else {})}
        return self.call(method, path, resource, **params)


@pytest.fixture
def api(aws, lambda_context) -> Iterator[Api]:
    itwin = ArchiveItwin(page=2)
    for item in SEED:
        data = blob(1000 + len(item["fileName"]), seed=len(item["id"]))
        itwin.add("forms", FORM, item["fileName"], data, **{k: v for k, v in item.items() if k != "fileName"})
    api = Api(aws, itwin, FakeSqs(), Steps(), lambda_context)
    use_service(api.service)
    yield api
    use_service(None)


def assert_error_body(answer: dict[str, Any], status: int, code: str, field: str | None = None) -> None:
    assert answer["statusCode"] == status, answer["body"]
    body = answer["json"]
    expected = {"code", "message", "requestId"} | ({"field"} if field else set())
    assert set(body) == expected
    assert body["code"] == code
    assert body["requestId"] == answer["requestId"]
    if field:
        assert body["field"] == field


def test_the_listing_answers_itwins_fields_and_whether_each_is_archived(api):
    answer = api.route("GET", "attachments", "forms", FORM)
    assert answer["statusCode"] == 200
    listed = answer["json"]["attachments"]
    assert api.itwin.pages_served == 2  # every page
    assert [a["id"] for a in listed] == [item["id"] for item in SEED]
    for got, seed in zip(listed, SEED, strict=True):
        stored = api.itwin.stored(seed["id"])
        assert {k: got[k] for k in seed} == seed
        assert got["size"] == len(stored.data)
        assert (got["archived"], got["archiveKey"]) == (False, None)
    assert set(listed[0]) == {*SEED[0], "size", "archived", "archiveKey"}


def test_the_listing_marks_a_copy_archived_once_it_is_made(api):
    first = SEED[0]["id"]
    api.route("GET", "file", "forms", FORM, first)
    listed = {a["id"]: a for a in api.route("GET", "attachments", "forms", FORM)["json"]["attachments"]}
    assert listed[first]["archived"] is True
    assert listed[first]["archiveKey"] == f"archive/forms/{FORM}/{first}/CrackedConcrete.png"
    assert [a["archived"] for a in listed.values()] == [True, False, False]


def test_a_parent_itwin_does_not_know_is_its_404(api):
    assert_error_body(api.route("GET", "attachments", "forms", "form-404"), 404, "FormDataNotFound")
    assert_error_body(api.route("GET", "attachments", "issues", "issue-404"), 404, "IssueNotFound")


def test_a_129_character_form_id_is_a_validation_error_naming_the_field(api):
    answer = api.route("GET", "attachments", "forms", "f" * 129)
    assert_error_body(answer, 422, "ValidationError", "formId")
    assert api.itwin.calls["list"] == 0


@pytest.mark.parametrize(
    ("what", "parent", "attachment_id", "field"),
    [
        ("attachments", "..", None, "formId"),
        ("attachments", ".", None, "formId"),
        ("file", FORM, "..", "attachmentId"),
        ("file", "..", "att-3", "formId"),
        ("archive", "..", None, "formId"),
    ],
)
def test_dot_segment_ids_are_validation_errors(api, what, parent, attachment_id, field):
    path = ROUTES[what].format(kind="forms").format(parent=parent, attachmentId=attachment_id)
    answer = api.call("POST" if what == "archive" else "GET", path)
    assert_error_body(answer, 422, "ValidationError", field)
    assert api.itwin.calls["list"] == 0


def test_an_unknown_route_is_a_404_error_body(api):
    assert_error_body(api.call("GET", "/nothing/here"), 404, "RouteNotFound")


def test_file_answers_302_to_a_presigned_url_of_the_copy(api):
    answer = api.route("GET", "file", "forms", FORM, "att-3")
    assert answer["statusCode"] == 302, answer["body"]
    body = answer["json"]
    assert answer["headers"]["Location"] == body["url"]
    data = api.itwin.stored("att-3").data
    assert body["key"] == "archive/forms/form-1/att-3/Bericht über Schäden.pdf"
    assert (body["size"], body["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    version = api.aws.s3.head_object(Bucket=api.aws.bucket, Key=body["key"])["VersionId"]
    assert f"versionId={version}" in body["url"]
    assert body["expiresAt"].endswith("Z")
    assert api.sqs.calls == []


def test_file_of_a_current_copy_downloads_nothing_again(api):
    api.route("GET", "file", "forms", FORM, "att-3")
    again = api.route("GET", "file", "forms", FORM, "att-3")
    assert again["statusCode"] == 302
    assert api.itwin.calls["download"] == 1


def test_file_of_an_unknown_attachment_is_itwins_404(api):
    assert_error_body(api.route("GET", "file", "forms", FORM, "att-404"), 404, "AttachmentNotFound")


def test_file_past_its_copy_deadline_answers_202_and_queues_exactly_one_copy(api):
    api.clock.step = 1_000.0  # each reading of the clock is far past the request's copy budget
    api.itwin.stored("att-3").data = blob(3 * MiB)
    api.itwin.stored("att-3").item["size"] = 3 * MiB
    answer = api.route("GET", "file", "forms", FORM, "att-3")
    assert answer["statusCode"] == 202, answer["body"]
    assert answer["headers"]["Retry-After"] == str(answer["json"]["retryAfter"])
    assert answer["json"] == {
        "state": "copying",
        "key": "archive/forms/form-1/att-3/Bericht über Schäden.pdf",
        "retryAfter": 10,
    }
    assert len(api.sqs.delivered) == 1
    (message,) = api.sqs.delivered
    assert (message["kind"], message["parentId"], message["jobId"]) == ("forms", FORM, None)
    assert message["attachment"]["id"] == "att-3"
    assert api.store.find(answer["json"]["key"]) is None  # nothing half-made


def test_archive_starts_a_job_and_queues_one_body_per_attachment(api):
    answer = api.route("POST", "archive", "forms", FORM)
    assert answer["statusCode"] == 202, answer["body"]
    job = answer["json"]
    assert answer["headers"]["Location"] == f"/archive-jobs/{job['jobId']}"
    assert (job["state"], job["total"], job["kind"], job["parentId"]) == ("running", 3, "forms", FORM)
    assert [m["attachment"]["id"] for m in api.sqs.delivered] == [item["id"] for item in SEED]
    assert {m["jobId"] for m in api.sqs.delivered} == {job["jobId"]}
    read = api.call("GET", f"/archive-jobs/{job['jobId']}", "/archive-jobs/{jobId}", jobId=job["jobId"])
    assert read["statusCode"] == 200
    assert read["json"] == job


def test_archive_counts_an_attachment_the_listing_names_twice_once(api):
    # The seed page's own example lists one id twice; a job counting it twice would never settle.
    api.itwin.add("forms", FORM, "again.jpg", b"again", id=SEED[0]["id"])
    job = api.route("POST", "archive", "forms", FORM)["json"]
    assert job["total"] == 3
    assert [m["attachment"]["id"] for m in api.sqs.delivered] == [item["id"] for item in SEED]


def test_archive_again_while_running_returns_the_same_job_and_queues_nothing(api):
    first = api.route("POST", "archive", "forms", FORM)["json"]
    queued = len(api.sqs.delivered)
    again = api.route("POST", "archive", "forms", FORM)
    assert again["statusCode"] == 202
    assert again["json"]["jobId"] == first["jobId"]
    assert len(api.sqs.delivered) == queued
    assert api.itwin.calls["list"] == 1


def test_archive_of_what_the_queue_refuses_counts_it_failed(api):
    api.sqs.refuse = [{"1"}, {"1"}]
    job = api.route("POST", "archive", "forms", FORM)["json"]
    assert (job["state"], job["failed"]) == ("running", 1)
    assert job["failures"] == [
        {
            "attachmentId": SEED[1]["id"],
            "code": "QueueError",
            "message": "1 message(s) were refused by the archive queue",
        }
    ]


def test_an_unknown_archive_job_is_404(api):
    answer = api.call("GET", "/archive-jobs/job-unknown", "/archive-jobs/{jobId}", jobId="job-unknown")
    assert_error_body(answer, 404, "ArchiveJobNotFound")


def test_a_failing_store_is_a_503_with_retry_after(api):
    api.service.archiver.store.bucket = "no-such-archive-bucket"
    answer = api.route("GET", "attachments", "forms", FORM)
    assert_error_body(answer, 503, "S3Error")
    assert answer["headers"]["Retry-After"] == "5"


def test_an_unexpected_error_is_a_500_without_its_text(api, monkeypatch):
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("attachments-internal-detail")

    monkeypatch.setattr(api.service, "attachments", explode)
    answer = api.route("GET", "attachments", "forms", FORM)
    assert_error_body(answer, 500, "InternalError")
    assert "attachments-internal-detail" not in answer["body"]


def test_the_openapi_route_answers_the_generated_document(api):
    answer = api.call("GET", "/openapi.json")
    assert answer["statusCode"] == 200
    assert answer["body"] == openapi_document()
    document = json.loads(answer["body"])
    assert "/forms/{formId}/attachments/{attachmentId}/file" in document["paths"]
    assert "/openapi.json" not in document["paths"]
