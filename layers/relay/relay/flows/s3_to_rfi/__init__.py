"""S3 → RFI (`S3ToRfiFunction`, `functions/s3_to_rfi`): an upload becomes one BIM 360 RFI attachment, through DM."""

from relay.flows.s3_to_rfi.flow import S3ToRfiFlow, build_s3_to_rfi

__all__ = ["S3ToRfiFlow", "build_s3_to_rfi"]
