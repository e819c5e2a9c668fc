"""Powertools Logger, Metrics and Tracer, built once per container; names come from the template's environment."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment


class _Untraced(BaseSegment):
    """The segment handed out while tracing is off: what the decorators put on it goes nowhere."""

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class Untraced(BaseProvider):
    """The Tracer's provider while tracing is off, so that the X-Ray SDK is never imported.

    Powertools imports `aws_xray_sdk.core` for its default provider even when it then disables
    tracing: outside Lambda about 120 ms of every start (its sampler's client included), for subsegments
    that are thrown away.
    """

    @contextlib.contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _Untraced()

    @contextlib.asynccontextmanager
    async def in_subsegment_async(self, name: Any = None, **kwargs: Any) -> AsyncGenerator[BaseSegment, None]:
        yield _Untraced()

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


def build_tracer() -> Tracer:
    """Powertools' own Tracer; with tracing off (POWERTOOLS_TRACE_DISABLED, or not running in Lambda, or SAM
    local: Powertools' rule, asked of Powertools) its provider is `Untraced` instead of the X-Ray recorder."""
    if Tracer._is_tracer_disabled():  # the same decision Tracer() makes, before it would import X-Ray
        return Tracer(disabled=True, provider=Untraced())
    return Tracer()


# POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE are set once, in template.yaml's Globals.
logger = Logger()
metrics = Metrics()
# Responses are never captured (the template sets it too): several of ours carry tokens.
tracer = build_tracer()
