"""Which iTwin issue or form an upload key names: `issues/<issueId>/<fileName>` or `forms/<formId>/<fileName>`."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from relay.errors import InvalidUploadError
from relay.vendors.itwin import KINDS, Kind

MAX_ID_CHARS = 128
MAX_FILE_NAME_CHARS = 255
# Format characters that reorder or hide text (bidi controls, BOM); ZWJ and ZWNJ stay, emoji sequences need them.
_HIDING_FORMAT = {0x061C, 0x200B, 0x200E, 0x200F, 0x2060, 0xFEFF, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
# Unassigned (Cn) and private-use (Co) characters pass: emoji newer than the runtime's Unicode are Cn.
_REFUSED_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")


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


def _refused(ch: str) -> bool:
    return unicodedata.category(ch) in _REFUSED_CATEGORIES or ord(ch) in _HIDING_FORMAT


def _check_segment(value: str, what: str, limit: int) -> None:
    if not value or not value.strip():
        raise InvalidUploadError(f"the {what} is empty", code="EmptyKeySegment")
    if value in (".", ".."):
        raise InvalidUploadError(f"the {what} is {value!r}", code="DotKeySegment")
    bad = next((ch for ch in value if _refused(ch)), None)
    if bad is not None:
        raise InvalidUploadError(f"the {what} holds control character U+{ord(bad):04X}", code="ControlCharacter")
    if len(value) > limit:
        raise InvalidUploadError(f"the {what} is {len(value)} characters; at most {limit}", code="KeySegmentTooLong")


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
