"""Powertools Logger, Metrics and Tracer, built once per container; names come from the template's environment."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

# POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE are set once, in template.yaml's Globals.
logger = Logger()
metrics = Metrics()
# Responses are never captured (the template sets it too): several of ours carry tokens.
tracer = Tracer()
