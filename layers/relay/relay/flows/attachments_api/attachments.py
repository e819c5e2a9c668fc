"""Routes: a parent's attachments, and one attachment's file as a pre-signed URL (issues and forms alike)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from relay.flows.attachments_api.models import AttachmentList, CopyPending, ErrorBody, FileLink
from relay.flows.attachments_api.service import Link, check_id, service
from relay.transport.retry import Deadline
from relay.vendors.itwin import Kind

router = Router()  # type: ignore[no-untyped-call]  # Powertools leaves __init__ unannotated

# The rule is checked on the decoded id (check_id): a REST API's `path` arrives percent-encoded, so a length
# here would count an encoded character three times.
ID_RULE = "1-128 characters once percent-decoded; no '/', '\\' or control characters; not '.' or '..'"
FormId = Annotated[str, Path(min_length=1, description=f"The form data id ({ID_RULE}).")]
IssueId = Annotated[str, Path(min_length=1, description=f"The issue id ({ID_RULE}).")]
AttachmentId = Annotated[str, Path(min_length=1, description=f"The attachment id ({ID_RULE}).")]

ERRORS: dict[int, OpenAPIResponse] = {
    status: {"description": text, "content": {"application/json": {"schema": ErrorBody.model_json_schema()}}}
    for status, text in (
        (404, "The issue, form, attachment or file does not exist (iTwin's code)."),
        (422, "A path value failed validation; `field` names it."),
        (502, "iTwin refused the relay's own credentials, or answered something undocumented."),
        (503, "iTwin is rate limiting or unavailable; retry after `Retry-After` seconds."),
    )
}
FILE_RESPONSES: dict[int, OpenAPIResponse] = {
    302: {
        "description": "The file is at `Location`, a pre-signed S3 GET URL (also in the body).",
        "content": {"application/json": {"schema": FileLink.model_json_schema()}},
    },
    202: {
        "description": "The copy is too slow to make within this request: the archive queue finishes it.",
        "content": {"application/json": {"schema": CopyPending.model_json_schema()}},
    },
    **ERRORS,
}


def _list(kind: Kind, parent_id: str, field: str) -> AttachmentList:
    svc = service()
    svc.start_request(router.lambda_context)
    return AttachmentList.model_validate({"attachments": svc.attachments(kind, check_id(field, parent_id))})


def _file(kind: Kind, parent_id: str, attachment_id: str, field: str) -> Response[Any]:
    svc = service()
    svc.start_request(router.lambda_context)
    left = Deadline.from_context(router.lambda_context)
    answer = svc.file(kind, check_id(field, parent_id), check_id("attachmentId", attachment_id), left.remaining)
    if isinstance(answer, Link):
        link = FileLink(
            url=answer.url,
            key=answer.copy.key,
            size=answer.copy.size,
            sha256=answer.copy.sha256,
            expiresAt=answer.expires_at,
        )
        return Response(302, content_types.APPLICATION_JSON, link.model_dump_json(), headers={"Location": answer.url})
    pending = CopyPending(key=answer.key, retryAfter=answer.retry_after)
    return Response(
        202, content_types.APPLICATION_JSON, pending.model_dump_json(), headers={"Retry-After": str(answer.retry_after)}
    )


@router.get("/forms/<formId>/attachments", summary="List a form's attachments", tags=["forms"], responses=ERRORS)
def list_form_attachments(formId: FormId) -> AttachmentList:
    return _list("forms", formId, "formId")


@router.get("/issues/<issueId>/attachments", summary="List an issue's attachments", tags=["issues"], responses=ERRORS)
def list_issue_attachments(issueId: IssueId) -> AttachmentList:
    return _list("issues", issueId, "issueId")


@router.get(
    "/forms/<formId>/attachments/<attachmentId>/file",
    summary="Get a form attachment's file (302 to a pre-signed S3 URL)",
    tags=["forms"],
    responses=FILE_RESPONSES,
)
def form_attachment_file(formId: FormId, attachmentId: AttachmentId) -> Response[Any]:
    return _file("forms", formId, attachmentId, "formId")


@router.get(
    "/issues/<issueId>/attachments/<attachmentId>/file",
    summary="Get an issue attachment's file (302 to a pre-signed S3 URL)",
    tags=["issues"],
    responses=FILE_RESPONSES,
)
def issue_attachment_file(issueId: IssueId, attachmentId: AttachmentId) -> Response[Any]:
    return _file("issues", issueId, attachmentId, "issueId")
