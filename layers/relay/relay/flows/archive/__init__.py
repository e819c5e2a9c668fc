"""Archive (`ArchiveFunction`, `functions/archive`): queued iTwin attachments become copies in S3, once each."""

from relay.flows.archive.archiver import Archived, Archiver, ArchiveRequest, AttachmentInfo
from relay.flows.archive.flow import ArchiveFlow, archive_jobs, archive_store, build_archive

__all__ = [
    "ArchiveFlow",
    "ArchiveRequest",
    "Archived",
    "Archiver",
    "AttachmentInfo",
    "archive_jobs",
    "archive_store",
    "build_archive",
]
