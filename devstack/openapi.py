"""Write (or check) docs/openapi.json: the OpenAPI document the attachments API generates from its routes."""

from __future__ import annotations

import argparse
import json
import sys

from devstack.template import ROOT
from relay.flows.attachments_api import openapi_document

DOCS = ROOT / "docs" / "openapi.json"


def generated() -> str:
    return json.dumps(json.loads(openapi_document()), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.openapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/openapi.json is not up to date")
    args = parser.parse_args(argv)
    text = generated()
    if args.check:
        if not DOCS.exists() or DOCS.read_text(encoding="utf-8") != text:
            print("docs/openapi.json differs from the generated document: run `make openapi`", file=sys.stderr)
            return 1
        print("docs/openapi.json is up to date")
        return 0
    DOCS.write_text(text, encoding="utf-8")
    print(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
