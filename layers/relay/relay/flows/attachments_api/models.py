"""The API's answers as pydantic models: they validate what goes out and write the OpenAPI document."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Attachment(BaseModel):
    """iTwin's attachment metadata (seed 001), and whether the archive holds a current copy."""

    id: str
    fileName: str
    createdDateTime: str | None = None
    size: int | None = None
    caption: str | None = None
    binding: str | None = None
    type: str | None = None
    archived: bool = Field(description="A copy of this exact file is in the archive bucket.")
    archiveKey: str | None = Field(default=None, description="The copy's S3 key, when archived.")


class AttachmentList(BaseModel):
    attachments: list[Attachment]


class FileLink(BaseModel):
    """Where to GET the file: a pre-signed S3 URL (the same as the 302's Location)."""

    url: str
    key: str
    size: int
    sha256: str | None
    expiresAt: str


class CopyPending(BaseModel):
    """The copy could not be made within this request: the archive queue finishes it. Ask again after retryAfter."""

    state: str = "copying"
    key: str
    retryAfter: int


class JobFailure(BaseModel):
    attachmentId: str
    code: str
    message: str


class ArchiveJobView(BaseModel):
    jobId: str
    kind: str
    parentId: str
    state: str = Field(description="running, succeeded or completed_with_failures")
    total: int
    archived: int
    skipped: int
    failed: int
    failures: list[JobFailure] = Field(description="Each failed attachment with its error code.")
    createdAt: str
    updatedAt: str


class ErrorBody(BaseModel):
    """Every error answer: a code to branch on, a message to read, and the request id to quote."""

    code: str
    message: str
    requestId: str
    field: str | None = None
