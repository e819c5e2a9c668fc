"""Settings resolved with one precedence: explicit argument, then environment, then default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from relay import constants as c
from relay.exceptions import ConfigurationError


def _pick(explicit: object, env: Mapping[str, str], name: str, default: str) -> str:
    if explicit is not None:
        return str(explicit)
    value = env.get(name, "").strip()
    return value or default


def _number(raw: str, name: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from exc
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {raw!r}")
    return value


def _base_url(raw: str, name: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def host_of(url: str) -> str:
    """Return the lower-cased host[:port] of a URL (port only when explicit)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class Settings:
    """Everything the functions read from their environment, validated once."""

    itwin_api_url: str = c.DEFAULT_ITWIN_API_URL
    aps_api_url: str = c.DEFAULT_APS_API_URL
    itwin_secret_id: str = ""
    aps_secret_id: str = ""
    allowed_upload_hosts: frozenset[str] = field(default_factory=frozenset)
    max_upload_bytes: int = c.DEFAULT_MAX_UPLOAD_BYTES
    idempotency_table: str = ""
    transfers_table: str = ""
    connect_timeout: float = c.DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = c.DEFAULT_READ_TIMEOUT
    max_attempts: int = c.DEFAULT_MAX_ATTEMPTS
    secret_max_age: int = c.DEFAULT_SECRET_MAX_AGE
    # Deliveries before SQS moves a message to the DLQ; the last one tags the object failed.
    max_receive_count: int | None = None

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        itwin_api_url: str | None = None,
        aps_api_url: str | None = None,
        itwin_secret_id: str | None = None,
        aps_secret_id: str | None = None,
        allowed_upload_hosts: str | None = None,
        max_upload_bytes: int | None = None,
        idempotency_table: str | None = None,
        transfers_table: str | None = None,
    ) -> Settings:
        e = os.environ if env is None else env
        hosts_raw = _pick(allowed_upload_hosts, e, c.ALLOWED_UPLOAD_HOSTS_ENV, "")
        raw_receive = _pick(None, e, c.MAX_RECEIVE_COUNT_ENV, "")
        hosts = frozenset(h.strip().lower() for h in hosts_raw.split(",") if h.strip())
        return cls(
            itwin_api_url=_base_url(
                _pick(itwin_api_url, e, c.ITWIN_API_URL_ENV, c.DEFAULT_ITWIN_API_URL), c.ITWIN_API_URL_ENV
            ),
            aps_api_url=_base_url(_pick(aps_api_url, e, c.APS_API_URL_ENV, c.DEFAULT_APS_API_URL), c.APS_API_URL_ENV),
            itwin_secret_id=_pick(itwin_secret_id, e, c.ITWIN_SECRET_ID_ENV, ""),
            aps_secret_id=_pick(aps_secret_id, e, c.APS_SECRET_ID_ENV, ""),
            allowed_upload_hosts=hosts,
            max_upload_bytes=int(
                _number(
                    _pick(max_upload_bytes, e, c.MAX_UPLOAD_BYTES_ENV, str(c.DEFAULT_MAX_UPLOAD_BYTES)),
                    c.MAX_UPLOAD_BYTES_ENV,
                    int,
                )
            ),
            idempotency_table=_pick(idempotency_table, e, c.IDEMPOTENCY_TABLE_ENV, ""),
            transfers_table=_pick(transfers_table, e, c.TRANSFERS_TABLE_ENV, ""),
            connect_timeout=_number(
                _pick(None, e, c.HTTP_CONNECT_TIMEOUT_ENV, str(c.DEFAULT_CONNECT_TIMEOUT)),
                c.HTTP_CONNECT_TIMEOUT_ENV,
                float,
            ),
            read_timeout=_number(
                _pick(None, e, c.HTTP_READ_TIMEOUT_ENV, str(c.DEFAULT_READ_TIMEOUT)), c.HTTP_READ_TIMEOUT_ENV, float
            ),
            max_attempts=int(
                _number(_pick(None, e, c.MAX_ATTEMPTS_ENV, str(c.DEFAULT_MAX_ATTEMPTS)), c.MAX_ATTEMPTS_ENV, int)
            ),
            secret_max_age=int(
                _number(_pick(None, e, c.SECRET_MAX_AGE_ENV, str(c.DEFAULT_SECRET_MAX_AGE)), c.SECRET_MAX_AGE_ENV, int)
            ),
            max_receive_count=int(_number(raw_receive, c.MAX_RECEIVE_COUNT_ENV, int)) if raw_receive else None,
        )

    def require(self, name: str) -> str:
        """Return a setting that a function cannot run without, or raise a named error."""
        value = getattr(self, name)
        if not value:
            env_name = {
                "itwin_secret_id": c.ITWIN_SECRET_ID_ENV,
                "aps_secret_id": c.APS_SECRET_ID_ENV,
                "idempotency_table": c.IDEMPOTENCY_TABLE_ENV,
                "transfers_table": c.TRANSFERS_TABLE_ENV,
            }.get(name, name)
            raise ConfigurationError(f"{env_name} is not set")
        return str(value)
