"""APS token refresher (`ApsTokenRefresherFunction`, `functions/aps_token_refresher`): the one writer of APS tokens."""

from relay.flows.aps_token_refresher.refresher import (
    ApsTokenRefresher,
    Decision,
    RefresherConfig,
    decide,
    fingerprint,
    refresh_token_age_days,
)
from relay.flows.aps_token_refresher.wiring import build_aps_token_refresher

__all__ = [
    "ApsTokenRefresher",
    "Decision",
    "RefresherConfig",
    "build_aps_token_refresher",
    "decide",
    "fingerprint",
    "refresh_token_age_days",
]
