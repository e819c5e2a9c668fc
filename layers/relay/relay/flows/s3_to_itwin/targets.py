"""Which iTwin issue or form an upload key names: `issues/<issueId>/<fileName>` or `forms/<formId>/<fileName>`."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from relay.errors import InvalidUploadError
from relay.segments import segment_problem
from relay.vendors.itwin import KINDS, Kind

MAX_ID_CHARS = 128
MAX_FILE_NAME_CHARS = 255


@dataclass(frozen=True)
class ItwinTarget:
    kind: Kind
    parent_id: str
    file_name: str

    def describe(self) -> str:
        return f"{self.kind}/{self.parent_id}"

    def claim_key(self, attachment_id: str) -> str:
        """How the transfers table names one attachment of this parent, for claims."""
        return f"itwin:{self.kind}/{self.parent_id}/{attachment_id}"


def _check_segment(value: str, what: str, limit: int) -> None:
    problem = segment_problem(value, what, limit)
    if problem is not None:
        raise InvalidUploadError(problem[1], code=problem[0])


def parse_target(key: str) -> ItwinTarget:
    """The target of an already URL-decoded key, or InvalidUploadError with a code naming the problem."""
    prefix, _, rest = key.partition("/")
    if prefix not in KINDS:
        raise InvalidUploadError(
            f"key {key!r} is not under a known prefix ({', '.join(k + '/' for k in KINDS)})", code="UnknownPrefix"
        )
    parent_id, _, file_name = rest.partition("/")
    what = "issue id" if prefix == "issues" else "form id"
    _check_segment(parent_id, what, MAX_ID_CHARS)
    if "/" in file_name:
        raise InvalidUploadError(
            f"key {key!r} has folders below the {what}; expected {prefix}/<id>/<fileName>", code="NestedKey"
        )
    _check_segment(file_name, "file name", MAX_FILE_NAME_CHARS)
    kind: Kind = "issues" if prefix == "issues" else "forms"
    return ItwinTarget(kind, parent_id, unicodedata.normalize("NFC", file_name))
