"""Routes: start archiving a parent's attachments, and read an archive job."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from relay.aws.jobs import ArchiveJob
from relay.flows.attachments_api.attachments import ERRORS, FormId, IssueId
from relay.flows.attachments_api.models import ArchiveJobView, JobFailure
from relay.flows.attachments_api.service import check_id, service
from relay.vendors.itwin import Kind

router = Router()  # type: ignore[no-untyped-call]  # Powertools leaves __init__ unannotated

JobId = Annotated[str, Path(min_length=1, description="The id a POST .../archive answered.")]
STARTED: dict[int, OpenAPIResponse] = {
    202: {
        "description": "The job (new, or the one already running for this parent); `Location` is its URL.",
        "content": {"application/json": {"schema": ArchiveJobView.model_json_schema()}},
    },
    **ERRORS,
}


def view(job: ArchiveJob) -> ArchiveJobView:
    return ArchiveJobView(
        jobId=job.job_id,
        kind=job.kind,
        parentId=job.parent_id,
        state=str(job.state),
        total=job.total,
        archived=job.archived,
        skipped=job.skipped,
        failed=job.failed,
        failures=[JobFailure(attachmentId=f.attachment_id, code=f.code, message=f.message) for f in job.failures],
        createdAt=job.created_at,
        updatedAt=job.updated_at,
    )


def _start(kind: Kind, parent_id: str, field: str) -> Response[Any]:
    svc = service()
    svc.start_request(router.lambda_context)
    job, _created = svc.archive(kind, check_id(field, parent_id))
    return Response(
        202,
        content_types.APPLICATION_JSON,
        view(job).model_dump_json(),
        headers={"Location": f"/archive-jobs/{job.job_id}"},
    )


@router.post(
    "/forms/<formId>/archive", summary="Archive every attachment of a form", tags=["archive"], responses=STARTED
)
def archive_form(formId: FormId) -> Response[Any]:
    return _start("forms", formId, "formId")


@router.post(
    "/issues/<issueId>/archive", summary="Archive every attachment of an issue", tags=["archive"], responses=STARTED
)
def archive_issue(issueId: IssueId) -> Response[Any]:
    return _start("issues", issueId, "issueId")


@router.get("/archive-jobs/<jobId>", summary="Read an archive job's progress", tags=["archive"], responses=ERRORS)
def archive_job(jobId: JobId) -> ArchiveJobView:
    return view(service().job(check_id("jobId", jobId)))
