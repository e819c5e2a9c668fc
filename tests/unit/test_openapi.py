"""docs/openapi.json is the document the resolver generates: it fails here whenever a route changes without it."""

from __future__ import annotations

import json

from devstack.openapi import DOCS, generated


def test_the_checked_in_openapi_document_is_the_generated_one():
    assert DOCS.read_text(encoding="utf-8") == generated(), "run `make openapi` and commit docs/openapi.json"


def test_every_route_is_documented_and_signed_with_sigv4():
    document = json.loads(generated())
    assert set(document["paths"]) == {
        "/forms/{formId}/attachments",
        "/issues/{issueId}/attachments",
        "/forms/{formId}/attachments/{attachmentId}/file",
        "/issues/{issueId}/attachments/{attachmentId}/file",
        "/forms/{formId}/archive",
        "/issues/{issueId}/archive",
        "/archive-jobs/{jobId}",
        "/webhooks/itwin",
    }
    assert document["security"] == [{"sigv4": []}]
    # The one open route: the webhook, whose HMAC signature is its authorisation.
    opened = [(p, m) for p, item in document["paths"].items() for m, op in item.items() if op.get("security") == []]
    assert opened == [("/webhooks/itwin", "post")]
    assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    file_route = document["paths"]["/forms/{formId}/attachments/{attachmentId}/file"]["get"]
    assert {"302", "202", "404", "422", "502", "503"} <= set(file_route["responses"])
