"""Which BIM 360 RFI an upload key names: `rfis/<projectId>/<rfiId>/<fileName>`."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from relay.errors import InvalidUploadError
from relay.segments import segment_problem
from relay.vendors.aps import MAX_NAME_CHARS

PREFIX = "rfis"
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class RfiTarget:
    project_id: str
    rfi_id: str
    file_name: str

    def describe(self) -> str:
        return f"rfis/{self.project_id}/{self.rfi_id}"

    @property
    def dm_name(self) -> str:
        """The Document Management item's name: the RFI id first, so that one name under two RFIs is two
        items (each RFI's attachment keeps its own file), and a document the relay did not make is versioned
        only if someone named it exactly so. The RFI attachment itself is named `file_name`."""
        return f"{self.rfi_id} {self.file_name}"


def _check_segment(value: str, what: str, limit: int) -> None:
    problem = segment_problem(value, what, limit)
    if problem is not None:
        raise InvalidUploadError(problem[1], code=problem[0])


def parse_target(key: str) -> RfiTarget:
    """The target of an already URL-decoded key, or InvalidUploadError with a code naming the problem.

    The file name is the RFI attachment's `name`, which takes at most 400 characters (shared/api/002).
    """
    prefix, _, rest = key.partition("/")
    if prefix != PREFIX:
        raise InvalidUploadError(f"key {key!r} is not under {PREFIX}/", code="UnknownPrefix")
    project_id, _, rest = rest.partition("/")
    _check_segment(project_id, "project id", MAX_ID_CHARS)
    rfi_id, _, file_name = rest.partition("/")
    _check_segment(rfi_id, "RFI id", MAX_ID_CHARS)
    if "/" in file_name:
        raise InvalidUploadError(
            f"key {key!r} has folders below the RFI id; expected rfis/<projectId>/<rfiId>/<fileName>", code="NestedKey"
        )
    # The name is normalised first and checked after: NFC can lengthen a name (U+0958 becomes two code points),
    # and the name APS checks against 400 is the one sent.
    name = unicodedata.normalize("NFC", file_name)
    _check_segment(name, "file name", MAX_NAME_CHARS)
    return RfiTarget(project_id, rfi_id, name)
