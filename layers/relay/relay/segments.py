"""The one rule for an id or name that becomes a path segment (upload keys, API paths): what it may not hold."""

from __future__ import annotations

import unicodedata

# Format characters that reorder or hide text (bidi controls, BOM); ZWJ and ZWNJ stay, emoji sequences need them.
_HIDING_FORMAT = {0x061C, 0x200B, 0x200E, 0x200F, 0x2060, 0xFEFF, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
# Unassigned (Cn) and private-use (Co) characters pass: emoji newer than the runtime's Unicode are Cn.
_REFUSED_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")


def refused(ch: str) -> bool:
    return unicodedata.category(ch) in _REFUSED_CATEGORIES or ord(ch) in _HIDING_FORMAT


def segment_problem(value: str, what: str, limit: int) -> tuple[str, str] | None:
    """(code, message) naming what is wrong with `value` as one segment, or None when it is fine."""
    if not value or not value.strip():
        return "EmptyKeySegment", f"the {what} is empty"
    if value in (".", ".."):
        return "DotKeySegment", f"the {what} is {value!r}"
    if "/" in value:
        return "NestedKey", f"the {what} holds '/'"
    bad = next((ch for ch in value if refused(ch)), None)
    if bad is not None:
        return "ControlCharacter", f"the {what} holds control character U+{ord(bad):04X}"
    if len(value) > limit:
        return "KeySegmentTooLong", f"the {what} is {len(value)} characters; at most {limit}"
    return None
