"""The attachments API over real HTTP: signed requests through the local gateway, moto and the sandbox."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from relay.aws.s3objects import decode_metadata
from tests.integration.conftest import Api, Harness, sha256

pytestmark = pytest.mark.integration
DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def error_of(response: requests.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) - {"field"} == {"code", "message", "requestId"}, body
    assert body["requestId"]
    assert body["requestId"] != "unknown"
    return body


def new_form(harness: Harness) -> str:
    return harness.new_parent("forms")


# -- refused before the function runs ---------------------------------------------------------------


def test_an_unsigned_request_is_refused_with_missing_authentication_token(api: Api):
    answer = api.get("/forms/FORM-2001/attachments", signed=False)
    assert answer.status_code == 403
    assert answer.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")
    assert answer.json() == {"message": "Missing Authentication Token"}


def test_a_wrongly_signed_request_is_refused(api: Api):
    from tests.integration.conftest import sigv4

    answer = requests.get(f"{api.url}/forms/FORM-2001/attachments", auth=sigv4(secret_key="not-the-secret"), timeout=30)
    assert answer.status_code == 403
    assert "signature" in answer.json()["message"].lower()
    assert "InvalidSignatureException" in answer.headers["x-amzn-ErrorType"]


def test_the_openapi_document_is_served_signed_and_matches_docs(api: Api):
    assert api.get("/openapi.json", signed=False).status_code == 403
    served = api.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(DOCS.read_text(encoding="utf-8")), "run `make openapi` and commit it"


# -- listing ----------------------------------------------------------------------------------------


def test_a_listing_follows_every_page_and_says_what_is_archived(api: Api, harness: Harness):
    form = new_form(harness)
    ids = [api.attach("forms", form, f"photo-{i:03}.jpg", b"x" * (i + 1), caption=f"c{i}") for i in range(120)]
    before = harness.counts().get("itwin.forms.list", 0)
    answer = api.get(f"/forms/{form}/attachments")
    assert answer.status_code == 200, answer.text
    listed = answer.json()["attachments"]
    # 3 pages of 50, none twice, in iTwin's order across the pages (the sandbox orders by createdDateTime, then
    # id: attachments made in the same millisecond are not in the order they were made).
    assert sorted(a["id"] for a in listed) == sorted(ids)
    assert listed == sorted(listed, key=lambda a: (a["createdDateTime"], a["id"]))
    assert harness.counts()["itwin.forms.list"] - before == 3
    first = next(a for a in listed if a["id"] == ids[0])
    assert set(first) == {"id", "fileName", "createdDateTime", "size", "caption", "binding", "type"} | {
        "archived",
        "archiveKey",
    }
    assert (first["fileName"], first["size"], first["caption"], first["type"]) == ("photo-000.jpg", 1, "c0", "jpg")
    assert not any(a["archived"] for a in listed)

    assert api.get(f"/forms/{form}/attachments/{ids[7]}/file").status_code == 302
    listed = api.get(f"/forms/{form}/attachments").json()["attachments"]
    archived = [a for a in listed if a["archived"]]
    assert [a["id"] for a in archived] == [ids[7]]
    assert archived[0]["archiveKey"] == f"archive/forms/{form}/{ids[7]}/photo-007.jpg"


def test_an_issue_listing_has_the_same_shape(api: Api, harness: Harness):
    issue = harness.new_parent("issues")
    api.attach("issues", issue, "crack.png", b"png", caption="Crack", binding="Location")
    listed = api.get(f"/issues/{issue}/attachments").json()["attachments"]
    assert [(a["fileName"], a["binding"], a["archived"]) for a in listed] == [("crack.png", "Location", False)]


def test_ids_arrive_percent_encoded_in_the_path_and_are_decoded_once(api: Api, harness: Harness):
    form = f"FORM Ü {harness.new_parent('forms')[-4:]}"
    harness.admin("POST", "itwin/forms", {"id": form})
    api.attach("forms", form, "a.txt", b"a")
    answer = api.get(f"/forms/{quote(form, safe='')}/attachments")
    assert answer.status_code == 200, answer.text
    assert [a["fileName"] for a in answer.json()["attachments"]] == ["a.txt"]


# -- /file --------------------------------------------------------------------------------------------


def fetch(link: requests.Response) -> bytes:
    assert link.status_code == 302, link.text
    assert link.headers["Location"] == link.json()["url"]
    got = requests.get(link.headers["Location"], timeout=30)  # the pre-signed URL needs no credentials
    assert got.status_code == 200
    return got.content


def test_file_makes_a_missing_copy_and_hands_out_a_presigned_url(api: Api, harness: Harness):
    form = new_form(harness)
    data = hashlib.sha256(b"seed").digest() * 4096
    att = api.attach("forms", form, "Prüfbericht 7.pdf", data, caption="Café – Süd", binding="Report")
    link = api.get(f"/forms/{form}/attachments/{att}/file")
    assert sha256(fetch(link)) == sha256(data)
    body = link.json()
    assert (body["size"], body["sha256"], body["key"]) == (
        len(data),
        sha256(data),
        f"archive/forms/{form}/{att}/Prüfbericht 7.pdf",
    )
    head = harness.s3.head_object(Bucket=harness.bucket, Key=body["key"])
    meta = {k: decode_metadata(v) for k, v in head["Metadata"].items()}
    created = next(a for a in harness.attachments(form, "forms") if a["id"] == att)["createdDateTime"]
    assert meta == {
        "attachment-id": att,
        "file-name": "Prüfbericht 7.pdf",
        "caption": "Café – Süd",
        "binding": "Report",
        "created-date-time": created,
        "sha256": sha256(data),
    }


def test_file_of_a_present_copy_downloads_nothing(api: Api, harness: Harness):
    form = new_form(harness)
    att = api.attach("forms", form, "a.bin", b"abc" * 1000)
    fetch(api.get(f"/forms/{form}/attachments/{att}/file"))
    downloads = harness.counts().get("itwin.forms.download", 0)
    harness.fault("itwin.forms.download", error_rate=1.0, error_status=500)  # any download now fails
    assert fetch(api.get(f"/forms/{form}/attachments/{att}/file")) == b"abc" * 1000
    assert harness.counts().get("itwin.forms.download", 0) == downloads
    assert len(api.archived("forms", form)) == 1


def test_file_replaces_a_stale_copy_whose_size_differs(api: Api, harness: Harness):
    form = new_form(harness)
    data = b"the real file" * 100
    att = api.attach("forms", form, "r.txt", data)
    key = f"archive/forms/{form}/{att}/r.txt"
    # Everything of a current copy but the size: only the size check can find it stale.
    meta = {"attachment-id": att, "sha256": sha256(b"truncated")}
    harness.s3.put_object(Bucket=harness.bucket, Key=key, Body=b"truncated", Metadata=meta)
    assert fetch(api.get(f"/forms/{form}/attachments/{att}/file")) == data
    assert harness.s3.head_object(Bucket=harness.bucket, Key=key)["Metadata"]["sha256"] == sha256(data)


def test_file_that_cannot_be_copied_in_time_answers_202_and_the_queue_finishes_it(api: Api, harness: Harness):
    from relay.flows.attachments_api import build_attachments_api, use_service
    from relay.settings import Settings

    form = new_form(harness)
    data = b"slow" * 50_000
    att = api.attach("forms", form, "slow.bin", data)
    env = harness.stack.env("AttachmentsApiFunction") | {"RELAY_API_COPY_SECONDS": "0.2"}
    use_service(build_attachments_api(Settings.load(env)))  # the container's settings, with a short copy budget
    harness.fault("itwin.forms.download", latency_ms=600)
    answer = api.get(f"/forms/{form}/attachments/{att}/file")
    assert answer.status_code == 202, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["key"] == f"archive/forms/{form}/{att}/slow.bin"
    assert api.archived("forms", form) == {}  # nothing half-made
    harness.admin("DELETE", "faults")
    report = api.archive_pump()
    assert report.delivered == 1
    assert not report.crashes
    assert fetch(api.get(f"/forms/{form}/attachments/{att}/file")) == data


def test_file_works_under_issues_too(api: Api, harness: Harness):
    issue = harness.new_parent("issues")
    att = api.attach("issues", issue, "p.jpg", b"jpeg")
    assert fetch(api.get(f"/issues/{issue}/attachments/{att}/file")) == b"jpeg"


# -- the error table ------------------------------------------------------------------------------------


def test_vendor_not_found_codes_are_404_with_the_vendors_code(api: Api, harness: Harness):
    form = new_form(harness)
    no_file = api.attach("forms", form, "empty.jpg", None)
    cases = {
        "/forms/NO-SUCH-FORM/attachments": "FormDataNotFound",
        "/issues/NO-SUCH-ISSUE/attachments": "IssueNotFound",
        f"/forms/{form}/attachments/no-such-attachment/file": "AttachmentNotFound",
        f"/forms/{form}/attachments/{no_file}/file": "FileNotFound",
        "/archive-jobs/no-such-job": "ArchiveJobNotFound",
    }
    for path, code in cases.items():
        answer = api.get(path)
        assert (answer.status_code, error_of(answer)["code"]) == (404, code), path


@pytest.mark.parametrize("status", [401, 403])
def test_itwin_refusing_the_relays_credentials_is_a_502_that_names_the_configuration(api: Api, status: int):
    api.harness.fault("itwin.forms.list", fail_next=[{"status": status, "count": 3}])
    answer = api.get("/forms/FORM-2001/attachments")
    body = error_of(answer)
    assert (answer.status_code, body["code"]) == (502, "ItwinCredentialsRejected")
    assert "configuration" in body["message"]


def test_itwin_rate_limiting_is_a_503_with_retry_after(api: Api):
    api.harness.fault("itwin.forms.list", fail_next=[{"status": 429, "retry_after": 30}])
    answer = api.get("/forms/FORM-2001/attachments")
    assert (answer.status_code, error_of(answer)["code"]) == (503, "ItwinRateLimited")
    assert answer.headers["Retry-After"] == "30"


def test_itwin_unavailable_after_retries_is_a_503_with_retry_after(api: Api):
    api.harness.fault("itwin.forms.list", error_rate=1.0, error_status=502)
    answer = api.get("/forms/FORM-2001/attachments")
    assert (answer.status_code, error_of(answer)["code"]) == (503, "ItwinUnavailable")
    assert int(answer.headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/forms/" + "F" * 129 + "/attachments", "formId"),
        ("/forms/a%2Fb/attachments", "formId"),
        ("/issues/%00x/attachments", "issueId"),
        ("/issues/%E2%80%AEevil/attachments", "issueId"),
        ("/forms/%ff/attachments", "formId"),
        ("/forms/FORM-2001/attachments/..%2F..%2Fx/file", "attachmentId"),
        ("/archive-jobs/" + "j" * 129, "jobId"),
    ],
)
def test_ids_that_fail_validation_are_422_naming_the_field(api: Api, path: str, field: str):
    answer = api.get(path)
    body = error_of(answer)
    assert (answer.status_code, body["code"], body["field"]) == (422, "ValidationError", field), body


def test_anything_unexpected_is_a_500_with_the_request_id_and_the_exception_logged(
    api: Api, harness: Harness, logs: Any
):
    from relay.flows.attachments_api import build_attachments_api, use_service
    from relay.settings import Settings

    service = build_attachments_api(Settings.load(harness.stack.env("AttachmentsApiFunction")))

    def broken(*_: Any) -> Any:
        raise KeyError("an internal detail")

    service.attachments = broken  # type: ignore[method-assign,assignment]
    use_service(service)
    answer = api.get("/forms/FORM-2001/attachments")
    body = error_of(answer)
    assert (answer.status_code, body["code"]) == (500, "InternalError")
    assert "internal detail" not in answer.text
    assert answer.headers["x-amzn-RequestId"] == body["requestId"]  # API Gateway's id, quoted by the caller
    logged = [json.loads(line) for line in logs.getvalue().splitlines() if "unexpected error" in line]
    assert logged
    assert "KeyError" in logged[-1]["exception"]
    assert logged[-1]["requestId"] == body["requestId"]


def test_an_unusable_attachment_in_iTwins_listing_is_left_out_not_a_blocked_parent(api: Api, harness: Harness):
    form = new_form(harness)
    good = api.attach("forms", form, "ok.jpg", b"ok")
    listing = {
        "attachments": [
            {"id": "../../escape", "fileName": "x.jpg", "size": 1},
            {"id": "x" * 300, "fileName": "long.jpg", "size": 1},
            {"id": good, "fileName": "ok.jpg", "size": 2, "createdDateTime": "2026-12-02T00:00:00Z"},
        ]
    }
    harness.fault("itwin.forms.list", fail_next=[{"status": 200, "body": json.dumps(listing)}])
    answer = api.get(f"/forms/{form}/attachments")
    assert answer.status_code == 200, answer.text
    assert [a["id"] for a in answer.json()["attachments"]] == [good]
