"""S3 as a role with fewer rights sees it, wrapped around a real client (moto in-process or moto server)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


class WithoutListBucket:
    """A role without ListBucket on a key: a HEAD of a missing key or version answers 403, not 404."""

    def __init__(self, client: Any, always: bool = False) -> None:
        self._client = client
        self._always = always  # every HEAD is denied: a real permission error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def head_object(self, **kwargs: Any) -> Any:
        denied = ClientError(
            {"Error": {"Code": "403", "Message": "Forbidden"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
            "HeadObject",
        )
        if self._always:
            raise denied
        try:
            return self._client.head_object(**kwargs)
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise denied from None
            raise
