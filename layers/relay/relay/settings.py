"""Settings from one table of (field, environment name, parser, default); argument beats environment beats default."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from relay import constants as c
from relay.errors import ConfigurationError


def _text(raw: str, name: str) -> str:
    return raw


def _base_url(raw: str, name: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _hosts(raw: str, name: str) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())


def _positive(kind: type[int] | type[float]) -> Callable[[str, str], Any]:
    def parse(raw: str, name: str) -> Any:
        try:
            value = kind(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{name} must be a number, got {raw!r}") from exc
        if value <= 0:
            raise ConfigurationError(f"{name} must be positive, got {raw!r}")
        return value

    return parse


def _optional_int(raw: str, name: str) -> int | None:
    return int(_positive(int)(raw, name)) if raw else None


def _part_size(raw: str, name: str) -> int:
    value = int(_positive(int)(raw, name))
    if value < c.MIN_ARCHIVE_PART_BYTES:
        raise ConfigurationError(
            f"{name} must be at least {c.MIN_ARCHIVE_PART_BYTES} (S3's smallest part), got {raw!r}"
        )
    return value


def _aps_part_size(raw: str, name: str) -> int:
    value = int(_positive(int)(raw, name))
    if value < c.MIN_APS_PART_BYTES:
        raise ConfigurationError(f"{name} must be at least {c.MIN_APS_PART_BYTES} (the 5 MB part minimum), got {raw!r}")
    return value


def _presign_expiry(raw: str, name: str) -> int:
    value = int(_positive(int)(raw, name))
    if value > 7 * 24 * 3600:
        raise ConfigurationError(f"{name} must be at most 604800 (SigV4's longest pre-signed URL), got {raw!r}")
    return value


class Field(NamedTuple):
    env: str
    parse: Callable[[str, str], Any]
    default: str


# The table: every setting, where it comes from, how it is read, and its default (as text).
TABLE: dict[str, Field] = {
    "itwin_api_url": Field(c.ITWIN_API_URL_ENV, _base_url, c.DEFAULT_ITWIN_API_URL),
    "aps_api_url": Field(c.APS_API_URL_ENV, _base_url, c.DEFAULT_APS_API_URL),
    "itwin_secret_id": Field(c.ITWIN_SECRET_ID_ENV, _text, ""),
    "aps_secret_id": Field(c.APS_SECRET_ID_ENV, _text, ""),
    "allowed_upload_hosts": Field(c.ALLOWED_UPLOAD_HOSTS_ENV, _hosts, ""),
    "allowed_token_hosts": Field(c.ALLOWED_TOKEN_HOSTS_ENV, _hosts, ""),
    "max_upload_bytes": Field(c.MAX_UPLOAD_BYTES_ENV, _positive(int), str(c.DEFAULT_MAX_UPLOAD_BYTES)),
    "idempotency_table": Field(c.IDEMPOTENCY_TABLE_ENV, _text, ""),
    "transfers_table": Field(c.TRANSFERS_TABLE_ENV, _text, ""),
    "connect_timeout": Field(c.HTTP_CONNECT_TIMEOUT_ENV, _positive(float), str(c.DEFAULT_CONNECT_TIMEOUT)),
    "read_timeout": Field(c.HTTP_READ_TIMEOUT_ENV, _positive(float), str(c.DEFAULT_READ_TIMEOUT)),
    "max_attempts": Field(c.MAX_ATTEMPTS_ENV, _positive(int), str(c.DEFAULT_MAX_ATTEMPTS)),
    "retry_base_delay": Field(c.RETRY_BASE_DELAY_ENV, _positive(float), str(c.DEFAULT_RETRY_BASE_DELAY)),
    "retry_max_delay": Field(c.RETRY_MAX_DELAY_ENV, _positive(float), str(c.DEFAULT_RETRY_MAX_DELAY)),
    "max_retry_after": Field(c.MAX_RETRY_AFTER_ENV, _positive(float), str(c.DEFAULT_MAX_RETRY_AFTER)),
    "secret_max_age": Field(c.SECRET_MAX_AGE_ENV, _positive(int), str(c.DEFAULT_SECRET_MAX_AGE)),
    # Deliveries before SQS moves a message to the DLQ; the last one tags the object failed.
    "max_receive_count": Field(c.MAX_RECEIVE_COUNT_ENV, _optional_int, ""),
    "archive_bucket": Field(c.ARCHIVE_BUCKET_ENV, _text, ""),
    "archive_queue_url": Field(c.ARCHIVE_QUEUE_URL_ENV, _text, ""),
    "archive_jobs_table": Field(c.ARCHIVE_JOBS_TABLE_ENV, _text, ""),
    "archive_part_bytes": Field(c.ARCHIVE_PART_BYTES_ENV, _part_size, str(c.DEFAULT_ARCHIVE_PART_BYTES)),
    "archive_job_stale_seconds": Field(
        c.ARCHIVE_JOB_STALE_SECONDS_ENV, _positive(int), str(c.DEFAULT_ARCHIVE_JOB_STALE_SECONDS)
    ),
    "presign_expiry_seconds": Field(
        c.PRESIGN_EXPIRY_SECONDS_ENV, _presign_expiry, str(c.DEFAULT_PRESIGN_EXPIRY_SECONDS)
    ),
    "api_copy_seconds": Field(c.API_COPY_SECONDS_ENV, _positive(float), str(c.DEFAULT_API_COPY_SECONDS)),
    "webhook_secret_id": Field(c.WEBHOOK_SECRET_ID_ENV, _text, ""),
    "webhook_deliveries_table": Field(c.WEBHOOK_DELIVERIES_TABLE_ENV, _text, ""),
    "webhook_max_body_bytes": Field(
        c.WEBHOOK_MAX_BODY_BYTES_ENV, _positive(int), str(c.DEFAULT_WEBHOOK_MAX_BODY_BYTES)
    ),
    "webhook_dedupe_seconds": Field(
        c.WEBHOOK_DEDUPE_SECONDS_ENV, _positive(int), str(c.DEFAULT_WEBHOOK_DEDUPE_SECONDS)
    ),
    "token_lease_table": Field(c.TOKEN_LEASE_TABLE_ENV, _text, ""),
    "aps_refresh_margin_minutes": Field(
        c.APS_REFRESH_MARGIN_MINUTES_ENV, _positive(float), str(c.DEFAULT_APS_REFRESH_MARGIN_MINUTES)
    ),
    "aps_refresh_token_warn_days": Field(
        c.APS_REFRESH_TOKEN_WARN_DAYS_ENV, _positive(float), str(c.DEFAULT_APS_REFRESH_TOKEN_WARN_DAYS)
    ),
    "aps_hub_id": Field(c.APS_HUB_ID_ENV, _text, ""),
    "aps_folder": Field(c.APS_FOLDER_ENV, _text, c.DEFAULT_APS_FOLDER),
    "aps_max_upload_bytes": Field(c.APS_MAX_UPLOAD_BYTES_ENV, _positive(int), str(c.DEFAULT_APS_MAX_UPLOAD_BYTES)),
    "aps_part_bytes": Field(c.APS_PART_BYTES_ENV, _aps_part_size, str(c.DEFAULT_APS_PART_BYTES)),
    "aps_part_concurrency": Field(c.APS_PART_CONCURRENCY_ENV, _positive(int), str(c.DEFAULT_APS_PART_CONCURRENCY)),
}


@dataclass(frozen=True)
class Settings:
    """Everything the functions read from their environment, validated once."""

    itwin_api_url: str = c.DEFAULT_ITWIN_API_URL
    aps_api_url: str = c.DEFAULT_APS_API_URL
    itwin_secret_id: str = ""
    aps_secret_id: str = ""
    allowed_upload_hosts: frozenset[str] = field(default_factory=frozenset)
    # Origins besides the vendor's documented token endpoint that may receive the client secret.
    allowed_token_hosts: frozenset[str] = field(default_factory=frozenset)
    max_upload_bytes: int = c.DEFAULT_MAX_UPLOAD_BYTES
    idempotency_table: str = ""
    transfers_table: str = ""
    connect_timeout: float = c.DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = c.DEFAULT_READ_TIMEOUT
    max_attempts: int = c.DEFAULT_MAX_ATTEMPTS
    retry_base_delay: float = c.DEFAULT_RETRY_BASE_DELAY
    retry_max_delay: float = c.DEFAULT_RETRY_MAX_DELAY
    max_retry_after: float = c.DEFAULT_MAX_RETRY_AFTER
    secret_max_age: int = c.DEFAULT_SECRET_MAX_AGE
    max_receive_count: int | None = None
    archive_bucket: str = ""
    archive_queue_url: str = ""
    archive_jobs_table: str = ""
    archive_part_bytes: int = c.DEFAULT_ARCHIVE_PART_BYTES
    archive_job_stale_seconds: int = c.DEFAULT_ARCHIVE_JOB_STALE_SECONDS
    presign_expiry_seconds: int = c.DEFAULT_PRESIGN_EXPIRY_SECONDS
    api_copy_seconds: float = c.DEFAULT_API_COPY_SECONDS
    webhook_secret_id: str = ""
    webhook_deliveries_table: str = ""
    webhook_max_body_bytes: int = c.DEFAULT_WEBHOOK_MAX_BODY_BYTES
    webhook_dedupe_seconds: int = c.DEFAULT_WEBHOOK_DEDUPE_SECONDS
    token_lease_table: str = ""
    aps_refresh_margin_minutes: float = c.DEFAULT_APS_REFRESH_MARGIN_MINUTES
    aps_refresh_token_warn_days: float = c.DEFAULT_APS_REFRESH_TOKEN_WARN_DAYS
    aps_hub_id: str = ""
    aps_folder: str = c.DEFAULT_APS_FOLDER
    aps_max_upload_bytes: int = c.DEFAULT_APS_MAX_UPLOAD_BYTES
    aps_part_bytes: int = c.DEFAULT_APS_PART_BYTES
    aps_part_concurrency: int = c.DEFAULT_APS_PART_CONCURRENCY

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **explicit: Any) -> Settings:
        """Read every field of TABLE; an explicit keyword argument wins over the environment."""
        unknown = set(explicit) - set(TABLE)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, spec in TABLE.items():
            if explicit.get(name) is not None:
                raw = str(explicit[name])
            else:
                raw = source.get(spec.env, "").strip() or spec.default
            values[name] = spec.parse(raw, spec.env)
        return cls(**values)

    def require(self, name: str) -> str:
        """Return a setting that a function cannot run without, or raise a named error."""
        value = getattr(self, name)
        if not value:
            raise ConfigurationError(f"{TABLE[name].env} is not set")
        return str(value)


# Checked at import with `if`, not `assert`: python -O would drop an assert.
if {f.name for f in fields(Settings)} != set(TABLE):
    raise RuntimeError("Settings and TABLE must name the same fields")
