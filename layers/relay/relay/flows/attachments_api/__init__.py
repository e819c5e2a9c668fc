"""Attachments over HTTP (`AttachmentsApiFunction`, `functions/attachments_api`): list, hand out, archive."""

from relay.flows.attachments_api.api import app, error_answer, openapi_document
from relay.flows.attachments_api.service import AttachmentsService, build_attachments_api, use_service

__all__ = ["AttachmentsService", "app", "build_attachments_api", "error_answer", "openapi_document", "use_service"]
