"""Archive jobs end to end: POST through the local gateway, the archive queue, the worker, S3 and the sandbox."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from devstack.invoke import invoke
from tests.conftest import load_event
from tests.integration.conftest import ARCHIVE_FUNCTION, Api, Harness, sha256

pytestmark = pytest.mark.integration


def sandbox_files(harness: Harness, kind: str, parent: str) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in harness.attachments(parent, kind)}


def assert_archived_once(api: Api, kind: str, parent: str, expected: dict[str, dict[str, Any]]) -> None:
    """One version per attachment, at its key, whose sha256 metadata and bytes match iTwin's file."""
    harness = api.harness
    versions = api.archived(kind, parent)
    assert sorted(versions) == sorted(f"archive/{kind}/{parent}/{a}/{f['fileName']}" for a, f in expected.items())
    for attachment_id, info in expected.items():
        key = f"archive/{kind}/{parent}/{attachment_id}/{info['fileName']}"
        got = harness.s3.get_object(Bucket=harness.bucket, Key=key)
        assert got["Metadata"]["sha256"] == info["sha256"]
        assert sha256(got["Body"].read()) == info["sha256"]


def job_of(api: Api, job_id: str) -> dict[str, Any]:
    answer = api.get(f"/archive-jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_an_archive_job_over_120_attachments_survives_429_5xx_and_drops_and_copies_each_once(
    api: Api, harness: Harness
):
    form = harness.new_parent("forms")
    for i in range(120):
        api.attach("forms", form, f"site-{i:03}.jpg", os.urandom(2000 + i * 37), caption=f"photo {i}")
    started = api.post(f"/forms/{form}/archive")
    assert started.status_code == 202, started.text
    job = started.json()
    assert (job["state"], job["total"], job["archived"]) == ("running", 120, 0)
    assert started.headers["Location"] == f"/archive-jobs/{job['jobId']}"
    again = api.post(f"/forms/{form}/archive")  # while it runs: the same job, nothing queued twice
    assert (again.status_code, again.json()["jobId"]) == (202, job["jobId"])
    assert harness.queue_depth("ArchiveQueue") == 120

    harness.fault(
        "itwin.forms.download",
        error_rate=0.15,
        error_status=503,
        drop_rate=0.05,
        fail_next=[
            {"status": 429, "retry_after": 1},
            {"status": 429, "retry_after": 1},
            {"status": 500},
            {"status": 502},
            {"drop": True},
            {"drop": True},
        ],
    )
    report = api.archive_pump(max_seconds=300)
    assert not report.crashes
    harness.admin("DELETE", "faults")
    done = job_of(api, job["jobId"])
    assert (done["state"], done["archived"], done["skipped"], done["failed"]) == ("succeeded", 120, 0, 0), done
    assert harness.queue_depth("ArchiveDeadLetterQueue") == 0
    assert_archived_once(api, "forms", form, sandbox_files(harness, "forms", form))

    downloads = harness.counts()["itwin.forms.download"]
    second = api.post(f"/forms/{form}/archive").json()
    assert second["jobId"] != job["jobId"]
    api.archive_pump()
    finished = job_of(api, second["jobId"])
    assert (finished["state"], finished["archived"], finished["skipped"]) == ("succeeded", 0, 120)
    assert harness.counts()["itwin.forms.download"] == downloads  # the second job downloaded nothing


def test_an_attachment_that_cannot_be_archived_is_counted_failed_with_its_code(api: Api, harness: Harness):
    issue = harness.new_parent("issues")
    good = api.attach("issues", issue, "ok.jpg", b"ok")
    empty = api.attach("issues", issue, "never-uploaded.jpg", None)
    job = api.post(f"/issues/{issue}/archive").json()
    api.archive_pump()
    done = job_of(api, job["jobId"])
    assert (done["state"], done["archived"], done["failed"]) == ("completed_with_failures", 1, 1)
    assert [(f["attachmentId"], f["code"]) for f in done["failures"]] == [(empty, "FileNotFound")]
    assert list(api.archived("issues", issue)) == [f"archive/issues/{issue}/{good}/ok.jpg"]


def test_a_file_larger_than_a_part_streams_through_staging_and_leaves_nothing_behind(api: Api, harness: Harness):
    form = harness.new_parent("forms")
    data = os.urandom(12 * 1024 * 1024 + 5)
    api.attach("forms", form, "drone.tif", data)
    api.post(f"/forms/{form}/archive")
    api.archive_pump()
    assert_archived_once(api, "forms", form, sandbox_files(harness, "forms", form))
    staged = harness.s3.list_object_versions(Bucket=harness.bucket, Prefix="staging/")
    assert not staged.get("Versions")
    assert not staged.get("DeleteMarkers")
    assert not harness.s3.list_multipart_uploads(Bucket=harness.bucket).get("Uploads")


def test_an_empty_form_gives_a_job_that_has_already_succeeded(api: Api, harness: Harness):
    form = harness.new_parent("forms")
    job = api.post(f"/forms/{form}/archive").json()
    assert (job["state"], job["total"]) == ("succeeded", 0)
    assert harness.queue_depth("ArchiveQueue") == 0


def test_the_archive_writes_nothing_that_notifies_the_upload_queue(api: Api, harness: Harness):
    form = harness.new_parent("forms")
    api.attach("forms", form, "x.jpg", b"x")
    api.post(f"/forms/{form}/archive")
    api.archive_pump()
    assert harness.queue_depth("UploadQueue") == 0  # archive/ and staging/ trigger no notification


# -- the events/ samples through the Docker-free invoke -------------------------------------------------


def test_every_api_sample_event_runs_against_the_local_stack(api: Api, harness: Harness):
    """Each route's sample, with the placeholders swapped for ids that exist locally."""
    attachment = api.attach("forms", "FORM-2001", "sample.pdf", b"%PDF-1.4 sample")
    issue_attachment = api.attach("issues", "ISSUE-1001", "sample.jpg", b"jpeg")
    answers: dict[str, dict[str, Any]] = {}

    def run(name: str, **ids: str) -> dict[str, Any]:
        text = json.dumps(load_event(name))
        for placeholder, value in ids.items():
            text = text.replace(placeholder, value)
        result: dict[str, Any] = invoke(harness.stack, "AttachmentsApiFunction", json.loads(text))
        answers[name] = result
        return result

    assert run("api-list-form-attachments.json")["statusCode"] == 200
    assert run("api-list-issue-attachments.json")["statusCode"] == 200
    assert run("api-get-form-attachment-file.json", **{"ATTACHMENT-ID": attachment})["statusCode"] == 302
    assert run("api-get-issue-attachment-file.json", **{"ATTACHMENT-ID": issue_attachment})["statusCode"] == 302
    archived = run("api-archive-form.json")
    assert archived["statusCode"] == 202
    job = json.loads(archived["body"])["jobId"]
    assert run("api-archive-issue.json")["statusCode"] == 202
    assert run("api-get-archive-job.json", **{"JOB-ID": job})["statusCode"] == 200
    assert json.loads(run("api-get-openapi.json")["body"])["info"]["title"] == "attachment-relay"
    listed = json.loads(answers["api-list-form-attachments.json"]["body"])["attachments"]
    assert attachment in [a["id"] for a in listed]


def test_the_archive_sample_event_runs_against_the_local_stack(api: Api, harness: Harness):
    data = b"%PDF-1.4 archived by the sample"
    attachment = api.attach("forms", "FORM-2001", "Inspection report.pdf", data)
    event = json.loads(json.dumps(load_event("sqs-archive-form-attachment.json")).replace("ATTACHMENT-ID", attachment))
    body = json.loads(event["Records"][0]["body"])
    body["attachment"]["size"] = len(data)
    event["Records"][0]["body"] = json.dumps(body)
    assert invoke(harness.stack, ARCHIVE_FUNCTION, event) == {"batchItemFailures": []}
    key = f"archive/forms/FORM-2001/{attachment}/Inspection report.pdf"
    assert harness.s3.head_object(Bucket=harness.bucket, Key=key)["Metadata"]["sha256"] == sha256(data)
