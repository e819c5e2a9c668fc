"""The single writer of APS user tokens: under a lease, refresh the pair when the access token nears expiry."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from relay.auth.secrets import PlatformSecret, SecretStore
from relay.auth.tokens import refresh_secret
from relay.aws.lease import Lease, LeaseState
from relay.errors import ApsLoginRequiredError, TokenEndpointError
from relay.observability import logger
from relay.transport.requestor import Requestor
from relay.transport.retry import Deadline

DAY = 86400.0


class Decision(StrEnum):
    """What a run does with the secret it read under the lease."""

    FRESH = "fresh"  # the access token outlives the margin: nothing to do
    REFRESH = "refresh"  # it expires within the margin: spend the refresh token now
    LOGIN_REQUIRED = "login_required"  # no refresh token, or one the endpoint already refused
    STALE_READ = "stale_read"  # older than what a previous run wrote: never spend a token from it


class MetricsSink(Protocol):
    def add_metric(self, name: str, unit: str, value: float) -> None: ...


def fingerprint(refresh_token: str) -> str:
    """What the lease table keeps of a dead refresh token: its sha256, never the token."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def decide(secret: PlatformSecret, now: float, margin_seconds: float, state: LeaseState) -> Decision:
    if not secret.refresh_token:
        return Decision.LOGIN_REQUIRED
    held = fingerprint(secret.refresh_token)
    if held == state.dead_refresh:
        return Decision.LOGIN_REQUIRED
    if held == state.spent_refresh:
        # The last run spent this one and wrote its successor: this read lags that write. Never present it.
        return Decision.STALE_READ
    if secret.access_token and secret.expires_at is not None and secret.expires_at - margin_seconds > now:
        return Decision.FRESH
    return Decision.REFRESH


def refresh_token_age_days(secret: PlatformSecret, now: float) -> float | None:
    if secret.refresh_token_issued_at is None:
        return None
    return max(0.0, now - secret.refresh_token_issued_at) / DAY


@dataclass(frozen=True)
class RefresherConfig:
    lease_table: str
    margin_seconds: float
    warn_days: float
    lease_seconds: float


class ApsTokenRefresher:
    """One run: take the lease, read the secret afresh, decide, and write a refreshed pair at once."""

    def __init__(
        self,
        config: RefresherConfig,
        store: SecretStore,
        secrets_client: Any,
        dynamodb_client: Any,
        endpoint: Requestor,
        metrics: MetricsSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.secrets_client = secrets_client
        self.dynamodb = dynamodb_client
        self.endpoint = endpoint
        self.metrics = metrics
        self.clock = clock

    def run(self, context: Any = None) -> dict[str, Any]:
        """The run's outcome as the function answers it. Only unexpected failures raise (the Errors alarm):
        a dead refresh token is answered, with the ApsLoginRequired metric, so the schedule never crash-loops."""
        self.endpoint.use_deadline(Deadline.from_context(context))
        lease = Lease(
            self.config.lease_table,
            self.dynamodb,
            f"aps-refresh#{self.store.secret_id}",
            seconds=self.config.lease_seconds,
            clock=self.clock,
        )
        state = lease.acquire()
        if state is None:
            logger.info("another refresher holds the lease; nothing to do")
            return {"status": "busy"}
        try:
            return self._under_lease(lease, state)
        except Exception:
            lease.release()
            raise

    def _under_lease(self, lease: Lease, state: LeaseState) -> dict[str, Any]:
        secret = self.store.get(force=True)
        now = self.clock()
        age = self._check_age(secret, now)
        decision = decide(secret, now, self.config.margin_seconds, state)
        answer: dict[str, Any] = {"status": str(decision), "refreshTokenAgeDays": age}
        if decision is Decision.LOGIN_REQUIRED:
            lease.release()
            return self._login_required("no usable refresh token in the secret", answer)
        if decision is not Decision.REFRESH:
            lease.release()
            if decision is Decision.STALE_READ:
                logger.warning("the secret read is older than the last refresh; the next run reads it again")
            return {**answer, "expiresAt": secret.expires_at}
        assert secret.refresh_token is not None  # nosec B101  # for mypy: decide() answers LOGIN_REQUIRED without one
        dead = fingerprint(secret.refresh_token)
        try:
            updated = refresh_secret(
                self.store, self.secrets_client, self.endpoint, grant="refresh_token", clock=self.clock, secret=secret
            )
        except TokenEndpointError as error:
            if error.code != "invalid_grant":
                raise
            lease.release(dead_refresh=dead)
            return self._login_required("the token endpoint refused the refresh token (invalid_grant)", answer)
        except ApsLoginRequiredError as error:
            lease.release(dead_refresh=dead)
            return self._login_required(error.message, answer)
        if not lease.release(spent_refresh=dead):
            logger.warning("the lease expired before this run released it; the refresh itself was written")
        self.metrics.add_metric(name="ApsTokenRefreshed", unit="Count", value=1)
        logger.info("APS tokens refreshed", extra={"expires_at": updated.expires_at})
        return {"status": "refreshed", "expiresAt": updated.expires_at, "refreshTokenAgeDays": 0.0}

    def _check_age(self, secret: PlatformSecret, now: float) -> float | None:
        age = refresh_token_age_days(secret, now)
        if age is None:
            logger.info("the secret does not say when its refresh token was issued")
        elif age > self.config.warn_days:
            self.metrics.add_metric(name="ApsRefreshTokenAging", unit="Count", value=1)
            logger.warning(
                "the APS refresh token is old: it dies 15 days after it was issued; run aps-login before then",
                extra={"refresh_token_age_days": round(age, 2), "warn_days": self.config.warn_days},
            )
        return None if age is None else round(age, 3)

    def _login_required(self, reason: str, answer: dict[str, Any]) -> dict[str, Any]:
        self.metrics.add_metric(name="ApsLoginRequired", unit="Count", value=1)
        logger.error(
            "ApsLoginRequired: a person must sign in again with `python -m relay.cli aps-login --secret-id <id>`",
            extra={"reason": reason, "secret_id": self.store.secret_id},
        )
        return {**answer, "status": "login_required", "error": ApsLoginRequiredError.code}
