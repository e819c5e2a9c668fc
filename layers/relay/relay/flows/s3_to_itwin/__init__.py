"""S3 → iTwin (`S3ToItwinFunction`, `functions/s3_to_itwin`): an upload becomes one issue or form attachment."""

from relay.flows.s3_to_itwin.flow import S3ToItwinFlow, TransferOutcome, build_s3_to_itwin

__all__ = ["S3ToItwinFlow", "TransferOutcome", "build_s3_to_itwin"]
