"""When to try a vendor call again, how long to wait, and never past the invocation's deadline."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from relay.errors import Outcome, RelayError, ServerError, VendorError

T = TypeVar("T")


def full_jitter(delay: float) -> float:
    """AWS 'full jitter': a uniform draw below the exponential delay."""
    return random.uniform(0, delay)  # noqa: S311  # nosec B311  # spreading retries needs no cryptographic randomness


@dataclass(frozen=True)
class RetryPolicy:
    """stripe's `_should_retry`, plus a deadline. Tests pin `jitter` to make delays exact."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    # A retry-after longer than this is not waited out in the invocation: the message returns to the queue.
    max_retry_after: float = 60.0
    # Seconds of the invocation kept free after the last wait, for tagging and recording the outcome.
    deadline_margin: float = 5.0
    jitter: Callable[[float], float] = field(default=full_jitter, compare=False)

    @staticmethod
    def should_retry(error: RelayError) -> bool:
        """Retry 5xx, 429, timeouts and connection failures; never another 4xx or a local error."""
        return isinstance(error, VendorError) and error.outcome is Outcome.RETRY

    def backoff(self, attempt: int) -> float:
        """Wait before attempt `attempt + 1` (attempt counts from 1): capped exponential, then jittered."""
        return self.jitter(min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))

    def delay(self, error: RelayError, attempt: int) -> float:
        """429 waits what `retry-after` says (at least the backoff); the rest back off."""
        wait = self.backoff(attempt)
        if isinstance(error, VendorError) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait

    def give_up_reason(self, error: RelayError, attempt: int, wait: float, remaining: float | None) -> str | None:
        """Why not to wait `wait` seconds and try again, or None to go ahead."""
        if attempt >= self.max_attempts:
            return f"{attempt} attempts"
        if isinstance(error, VendorError) and (error.retry_after or 0) > self.max_retry_after:
            return f"retry-after {error.retry_after:.0f}s is over the {self.max_retry_after:.0f}s cap"
        if remaining is not None and wait + self.deadline_margin > remaining:
            return (
                f"waiting {wait:.1f}s would outlive the invocation ({remaining:.1f}s left, "
                f"{self.deadline_margin:.0f}s margin)"
            )
        return None


class Deadline:
    """The invocation's remaining time; `None` remaining means no limit (scripts, tests)."""

    def __init__(self, remaining_ms: Callable[[], int] | None = None) -> None:
        self._remaining_ms = remaining_ms

    @classmethod
    def from_context(cls, context: Any) -> Deadline:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        return cls(getter if callable(getter) else None)

    def remaining(self) -> float | None:
        return None if self._remaining_ms is None else self._remaining_ms() / 1000.0


def post_once(
    post: Callable[[], T], find: Callable[[], T | None], pause: Callable[[VendorError, int], bool]
) -> tuple[T, bool]:
    """Send a create that must happen once; return its result, and True when it was found instead of made.

    After an ambiguous failure (a lost answer, or a 5xx that may follow the work) `find` looks first. A 5xx was
    an answer: the server is done with the request, so with nothing found the POST is sent again after
    `pause` (the requestor's policy and deadline). A lost answer may still be at work: with nothing found, the
    error is raised, for the message to come back.
    """
    round_ = 0
    while True:
        round_ += 1
        try:
            return post(), False
        except VendorError as error:
            if not error.ambiguous:
                raise
            found = find()
            if found is not None:
                return found, True
            if not (isinstance(error, ServerError) and pause(error, round_)):
                raise
