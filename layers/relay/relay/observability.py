"""Powertools Logger, Metrics and Tracer, built once per container and shared by every module."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

from relay.constants import METRICS_NAMESPACE, SERVICE_NAME

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
# Responses are never captured by default: several of ours carry tokens (template sets it too).
tracer = Tracer(service=SERVICE_NAME)
