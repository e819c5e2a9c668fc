"""The archive's S3 side and the Archiver's decisions: keys, metadata, whole-once writes, skip or replace."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from itertools import count
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import errors as e
from relay.aws.archive import (
    MAX_KEY_BYTES,
    METADATA_LIMIT,
    ArchivedCopy,
    ArchiveStore,
    CopyMetadata,
    archive_key,
    safe_file_name,
)
from relay.aws.jobs import ArchiveJobs, JobState, Result
from relay.aws.s3objects import decode_metadata
from relay.flows.archive import ArchiveFlow, Archiver, ArchiveRequest, AttachmentInfo
from relay.settings import Settings
from tests.unit.archive_fakes import ArchiveItwin, MiB, blob

PART = 5 * MiB  # S3's smallest part: moto checks it when a multipart upload completes
LARGE = 11 * MiB  # three parts
META = CopyMetadata("att-1", "report.pdf", "site walk", "issue-photo", "2026-12-02T10:00:00Z")


def chunks(data: bytes, size: int = MiB) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Recording:
    """An S3 client that passes every call on and remembers its name (what S3 was asked to do)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return target(*args, **kwargs)

        return call

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for called, kwargs in self.calls if called == name]


@pytest.fixture
def s3(aws) -> Recording:
    return Recording(aws.s3)


@pytest.fixture
def store(aws, s3) -> ArchiveStore:
    return ArchiveStore(s3, aws.bucket, part_size=PART)


def leftovers(aws, bucket: str | None = None) -> dict[str, Any]:
    """What a write may leave behind: open multipart uploads, and anything (a delete marker too) under staging/."""
    bucket = bucket or aws.bucket
    uploads = aws.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    staged = aws.s3.list_object_versions(Bucket=bucket, Prefix="staging/")
    return {
        "uploads": [u["Key"] for u in uploads],
        "staged": [v["Key"] for v in staged.get("Versions", [])],
        "markers": [m["Key"] for m in staged.get("DeleteMarkers", [])],
    }


NOTHING_LEFT: dict[str, list[str]] = {"uploads": [], "staged": [], "markers": []}


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("site photo (1).jpg", "site photo (1).jpg"),
        ("Bericht über Schäden.pdf", "Bericht über Schäden.pdf"),
        ("a/b.pdf", "a_b.pdf"),
        ("a\\b.pdf", "a_b.pdf"),
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("line\nbreak\t.txt", "line_break_.txt"),
        ("nul\x00.txt", "nul_.txt"),
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),  # a right-to-left override cannot disguise the extension
        ("zero\u200bwidth.txt", "zero_width.txt"),
        (".", "file"),
        ("..", "file"),
        ("", "file"),
        ("   ", "file"),
        (" .. ", "file"),
    ],
)
def test_a_file_name_becomes_one_safe_key_segment(name, expected):
    assert safe_file_name(name) == expected
    key = archive_key("forms", "form-1", "att-1", name)
    assert key == f"archive/forms/form-1/att-1/{expected}"


def test_a_long_name_is_cut_to_the_key_limit_and_keeps_its_extension():
    key = archive_key("issues", "issue-1", "att-1", "ü" * 2000 + ".pdf")
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert key.endswith(".pdf")
    assert key.startswith("archive/issues/issue-1/att-1/ü")
    key.encode().decode("utf-8")  # never cut inside a character


def test_a_long_name_without_a_short_extension_is_simply_cut():
    key = archive_key("issues", "issue-1", "att-1", "x" * 2000 + "." + "y" * 40)
    assert len(key.encode()) == MAX_KEY_BYTES
    assert key.rsplit("/", 1)[-1] == "x" * (MAX_KEY_BYTES - len("archive/issues/issue-1/att-1/"))


IDS = st.text(st.characters(codec="ascii", categories=("L", "N"), include_characters="-_.~"), min_size=1, max_size=128)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["issues", "forms"]), parent=IDS, attachment=IDS, name=st.text(max_size=1500))
def test_any_file_name_gives_a_key_within_s3s_limit_and_exactly_four_segments_deep(kind, parent, attachment, name):
    if parent in (".", "..") or attachment in (".", ".."):
        return
    key = archive_key(kind, parent, attachment, name)
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert key.startswith("archive/")
    assert key.count("/") == 4  # archive/{kind}/{parent}/{attachment}/{name}: the name adds none
    segment = key.rsplit("/", 1)[-1]
    assert segment not in ("", ".", "..")
    assert segment.isprintable()
    assert key.startswith(f"archive/{kind}/{parent}/{attachment}/")


# -- metadata --------------------------------------------------------------------------------------


def test_ascii_metadata_is_sent_as_it_is():
    meta = META.encoded("ab" * 32)
    assert meta == {
        "attachment-id": "att-1",
        "file-name": "report.pdf",
        "binding": "issue-photo",
        "created-date-time": "2026-12-02T10:00:00Z",
        "sha256": "ab" * 32,
        "caption": "site walk",
    }


def test_missing_fields_are_left_out():
    meta = CopyMetadata("att-1", "a.pdf", None, None, None).encoded("00")
    assert set(meta) == {"attachment-id", "file-name", "sha256"}


@pytest.mark.parametrize(
    ("file_name", "caption"),
    [
        ("Bericht über Schäden.pdf", "Wasserschaden im Flur"),
        ("現場写真.jpg", "北側の壁のひび割れ"),
        ("plain.pdf", "line one\nline two"),  # ASCII with a control character is not sent raw
        ("emoji 🏗️.png", "crane 🏗️ on site"),
        ("=?utf-8?q?not_encoded?=.txt", "=?utf-8?b?aGk=?="),  # ASCII that reads like RFC 2047 stays itself
    ],
)
def test_unicode_metadata_is_rfc2047_ascii_that_decodes_back(file_name, caption):
    meta = CopyMetadata("att-1", file_name, caption, None, None).encoded("00")
    assert all(value.isascii() and value.isprintable() for value in meta.values())
    assert decode_metadata(meta["file-name"]) == file_name
    assert decode_metadata(meta["caption"]) == caption
    assert "caption-truncated" not in meta


def _metadata_size(meta: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())


@pytest.mark.parametrize("letter", ["a", "ü", "写"])
def test_a_10_kb_caption_is_truncated_marked_and_the_whole_fits_in_2_kb(letter):
    caption = letter * (10 * 1024 // len(letter.encode()))
    meta = CopyMetadata("att-1", "report.pdf", caption, "b", "2026-12-02T10:00:00Z").encoded("ab" * 32)
    assert meta["caption-truncated"] == "true"
    assert _metadata_size(meta) <= METADATA_LIMIT
    kept = decode_metadata(meta["caption"])
    assert kept
    assert caption.startswith(kept)
    assert meta["sha256"] == "ab" * 32  # the fields the archive decides on are never the ones cut


def test_a_file_name_too_long_for_the_2_kb_is_cut_and_marked_and_the_copy_can_still_be_written():
    name = "写" * 900 + ".pdf"  # 2.7 KB of UTF-8: alone past S3's 2 KB of metadata
    meta = CopyMetadata("att-1", name, "caption", None, None).encoded("ab" * 32)
    assert meta["file-name-truncated"] == "true"
    assert name.startswith(decode_metadata(meta["file-name"]))
    assert decode_metadata(meta["caption"]) == "caption"
    assert _metadata_size(meta) <= METADATA_LIMIT


TEXT = st.text(max_size=3000) | st.none()


@settings(max_examples=200, deadline=None)
@given(
    attachment=IDS, name=st.text(max_size=3000) | st.just("=?utf-8?b?aGk=?="), caption=TEXT, binding=TEXT, created=TEXT
)
def test_any_attachment_gives_ascii_metadata_within_2_kb_that_keeps_id_and_sha256(
    attachment, name, caption, binding, created
):
    meta = CopyMetadata(attachment, name, caption, binding, created).encoded("ab" * 32)
    assert _metadata_size(meta) <= METADATA_LIMIT
    assert all(value.isascii() and value.isprintable() for value in meta.values())
    assert decode_metadata(meta["attachment-id"]) == attachment
    assert meta["sha256"] == "ab" * 32
    for field, value in (("file-name", name), ("caption", caption), ("binding", binding)):
        # (decode_metadata keeps an encoded word that decodes to only whitespace as sent, by design)
        if value and value.strip() and f"{field}-truncated" not in meta:
            assert decode_metadata(meta[field]) == value.encode("utf-8", "replace").decode()


def test_a_caption_that_fits_is_kept_whole():
    caption = "c" * 1500
    meta = CopyMetadata("att-1", "r.pdf", caption, None, None).encoded("ab" * 32)
    assert meta["caption"] == caption
    assert "caption-truncated" not in meta


# -- writing ---------------------------------------------------------------------------------------


def _final(aws, key: str) -> tuple[bytes, dict[str, str], str]:
    got = aws.s3.get_object(Bucket=aws.bucket, Key=key)
    return got["Body"].read(), got["Metadata"], got["ContentType"]


@pytest.mark.parametrize("size", [0, 1, MiB, PART, LARGE], ids=["empty", "1-byte", "1-MiB", "one-part", "multipart"])
def test_a_write_leaves_exactly_the_bytes_their_sha256_and_the_metadata_at_the_key(aws, store, s3, size):
    data = blob(size)
    key = store.key("forms", "form-1", "att-1", "report.pdf")
    copy, wrote = store.write(
        key, chunks(data), META, content_type="application/pdf", replace=False, expected_size=size
    )
    body, metadata, content_type = _final(aws, key)
    assert wrote is True
    assert body == data
    assert metadata == META.encoded(hashlib.sha256(data).hexdigest())
    assert content_type == "application/pdf"
    assert copy == ArchivedCopy(key, size, "att-1", hashlib.sha256(data).hexdigest(), copy.version_id)
    assert copy.version_id == aws.s3.head_object(Bucket=aws.bucket, Key=key)["VersionId"]
    assert store.find(key) == copy
    assert leftovers(aws) == NOTHING_LEFT
    # The final key is written once, whole: one PUT, or one CopyObject from the completed staging upload.
    written = [kw["Key"] for name, kw in s3.calls if name in ("put_object", "complete_multipart_upload", "copy_object")]
    assert written.count(key) == 1
    assert len(aws.s3.list_object_versions(Bucket=aws.bucket, Prefix=key)["Versions"]) == 1


def test_one_part_and_multipart_writes_give_the_same_copy(aws, store):
    data = blob(LARGE)
    small = ArchiveStore(aws.s3, aws.bucket, part_size=LARGE)  # the whole file in one part
    one, _ = small.write("archive/forms/f/a/one.bin", chunks(data), META, content_type="x/y", replace=False)
    many, _ = store.write("archive/forms/f/a/many.bin", chunks(data), META, content_type="x/y", replace=False)
    assert (one.size, one.sha256, one.attachment_id) == (many.size, many.sha256, many.attachment_id)
    assert _final(aws, one.key) == _final(aws, many.key)


def test_chunks_of_any_size_are_reassembled_into_the_same_bytes(aws, store):
    data = blob(LARGE)
    copy, _ = store.write("archive/forms/f/a/odd.bin", chunks(data, 777_777), META, content_type="x", replace=False)
    assert _final(aws, copy.key)[0] == data
    assert copy.sha256 == hashlib.sha256(data).hexdigest()


def test_an_unversioned_bucket_is_left_clean_too(aws):
    aws.s3.create_bucket(Bucket="plain-archive")
    store = ArchiveStore(aws.s3, "plain-archive", part_size=PART)
    data = blob(LARGE)
    copy, wrote = store.write("archive/issues/i/a/f.bin", chunks(data), META, content_type="x", replace=False)
    assert wrote is True
    assert copy.version_id is None
    assert aws.s3.get_object(Bucket="plain-archive", Key=copy.key)["Body"].read() == data
    assert leftovers(aws, "plain-archive") == NOTHING_LEFT


@pytest.mark.parametrize("size", [10, LARGE], ids=["one-part", "multipart"])
def test_without_replace_an_existing_copy_is_kept_and_returned(aws, store, size):
    key = "archive/forms/form-1/att-1/report.pdf"
    theirs, _ = store.write(key, chunks(blob(size, seed=1)), META, content_type="x", replace=False)
    copy, wrote = store.write(key, chunks(blob(size, seed=2)), META, content_type="x", replace=False)
    assert wrote is False
    assert copy == theirs
    assert _final(aws, key)[0] == blob(size, seed=1)
    assert len(aws.s3.list_object_versions(Bucket=aws.bucket, Prefix=key)["Versions"]) == 1
    assert leftovers(aws) == NOTHING_LEFT


@pytest.mark.parametrize("size", [10, LARGE], ids=["one-part", "multipart"])
def test_with_replace_a_stale_copy_is_overwritten(aws, store, size):
    key = "archive/forms/form-1/att-1/report.pdf"
    store.write(key, chunks(blob(size, seed=1)), META, content_type="x", replace=False)
    copy, wrote = store.write(key, chunks(blob(size, seed=2)), META, content_type="x", replace=True)
    assert wrote is True
    assert _final(aws, key)[0] == blob(size, seed=2)
    assert store.find(key) == copy
    assert leftovers(aws) == NOTHING_LEFT


class Broken(Exception):
    pass


def _breaking(data: bytes, after: int) -> Iterator[bytes]:
    for number, chunk in enumerate(chunks(data)):
        if number == after:
            raise Broken("the download broke off")
        yield chunk


@pytest.mark.parametrize(
    "after", [0, 3, 7, 10], ids=["before-any-byte", "within-part-1", "within-part-2", "within-part-3"]
)
def test_a_stream_that_breaks_leaves_no_copy_no_upload_and_no_staging_marker(aws, store, s3, after):
    key = "archive/forms/form-1/att-1/report.pdf"
    with pytest.raises(Broken):
        store.write(key, _breaking(blob(LARGE), after), META, content_type="x", replace=False)
    assert aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="archive/").get("KeyCount") == 0
    assert leftovers(aws) == NOTHING_LEFT
    # S3 (unlike moto) writes a delete marker for a DELETE of a key that has no version: never ask for one.
    assert s3.named("delete_object") == []


@pytest.mark.parametrize(("size", "expected"), [(10, 11), (LARGE, LARGE - 1), (LARGE, LARGE + PART)])
def test_a_download_of_another_size_than_listed_is_incomplete_and_leaves_nothing(aws, store, size, expected):
    key = "archive/forms/form-1/att-1/report.pdf"
    with pytest.raises(e.IncompleteDownloadError) as raised:
        store.write(key, chunks(blob(size)), META, content_type="x", replace=False, expected_size=expected)
    assert raised.value.outcome is e.Outcome.RETRY
    assert store.find(key) is None
    assert leftovers(aws) == NOTHING_LEFT


def test_an_s3_refusal_is_an_object_store_error(aws):
    store = ArchiveStore(aws.s3, "no-such-archive-bucket", part_size=PART)
    with pytest.raises(e.ObjectStoreError) as raised:
        store.write("archive/forms/f/a/x", chunks(b"x"), META, content_type="x", replace=True)
    assert "NoSuchBucket" in raised.value.message


# -- reading ---------------------------------------------------------------------------------------


def test_find_of_a_missing_key_is_none(store):
    assert store.find("archive/forms/form-1/att-9/none.pdf") is None


class ForbiddenHead:
    """S3 without ListBucket on the key: a HEAD of a missing key answers 403."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def head_object(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "403"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadObject")


def test_a_403_head_is_missing_when_the_listing_does_not_show_the_key(aws):
    store = ArchiveStore(ForbiddenHead(aws.s3), aws.bucket, part_size=PART)
    assert store.find("archive/forms/form-1/att-1/a.pdf") is None


def test_a_403_head_of_a_listed_key_is_an_object_store_error(aws):
    aws.s3.put_object(Bucket=aws.bucket, Key="archive/forms/form-1/att-1/a.pdf", Body=b"x")
    store = ArchiveStore(ForbiddenHead(aws.s3), aws.bucket, part_size=PART)
    with pytest.raises(e.ObjectStoreError):
        store.find("archive/forms/form-1/att-1/a.pdf")


def test_copies_lists_only_that_parent_with_sizes(aws, store):
    for key, size in [
        ("archive/forms/form-1/att-1/a.pdf", 3),
        ("archive/forms/form-1/att-2/b.pdf", 5),
        ("archive/forms/form-10/att-3/c.pdf", 7),  # a parent whose id starts with form-1
        ("archive/issues/form-1/att-4/d.pdf", 9),  # the same id as an issue
        ("forms/form-1/upload.pdf", 11),  # an upload, not a copy
    ]:
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"x" * size)
    assert store.copies("forms", "form-1") == {
        "archive/forms/form-1/att-1/a.pdf": 3,
        "archive/forms/form-1/att-2/b.pdf": 5,
    }
    assert store.copies("forms", "form-2") == {}


def test_copies_follows_every_page(aws, store):
    for number in range(1005):
        aws.s3.put_object(Bucket=aws.bucket, Key=f"archive/issues/i/att-{number}/f", Body=b"")
    assert len(store.copies("issues", "i")) == 1005


def test_presign_names_the_version_and_the_download_name(aws, store):
    copy, _ = store.write("archive/forms/f/att-1/r.pdf", chunks(b"abc"), META, content_type="x", replace=False)
    url = store.presign(copy, 900, "Bericht über Schäden.pdf")
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path.endswith("/archive/forms/f/att-1/r.pdf")
    assert query["versionId"] == [copy.version_id]
    disposition = query["response-content-disposition"][0]
    assert 'filename="Bericht _ber Sch_den.pdf"' in disposition
    assert "filename*=UTF-8''Bericht%20%C3%BCber%20Sch%C3%A4den.pdf" in disposition


def test_presign_of_an_unversioned_copy_names_no_version(store):
    url = store.presign(ArchivedCopy("archive/forms/f/a/r.pdf", 3), 60, "r.pdf")
    assert "versionId" not in parse_qs(urlsplit(url).query)


# -- the Archiver ----------------------------------------------------------------------------------


@pytest.fixture
def itwin() -> ArchiveItwin:
    return ArchiveItwin()


@pytest.fixture
def archiver(itwin, store) -> Archiver:
    return Archiver(itwin, store)


def _info(itwin: ArchiveItwin, name: str = "report.pdf", data: bytes = b"%PDF-1.7 ...", **fields: Any):
    return AttachmentInfo.from_itwin(itwin.add("forms", "form-1", name, data, **fields))


def test_a_missing_copy_is_downloaded_and_written(aws, itwin, archiver):
    info = _info(itwin, caption="north wall")
    archived = archiver.ensure("forms", "form-1", info)
    assert archived.copied is True
    assert archived.copy.key == f"archive/forms/form-1/{info.id}/report.pdf"
    body, metadata, content_type = _final(aws, archived.copy.key)
    assert body == b"%PDF-1.7 ..."
    assert decode_metadata(metadata["caption"]) == "north wall"
    assert content_type == "application/octet-stream"  # what iTwin's download said
    assert itwin.downloads[-1].raw.closed


def test_a_current_copy_is_skipped_without_a_download(itwin, archiver):
    info = _info(itwin)
    first = archiver.ensure("forms", "form-1", info)
    again = archiver.ensure("forms", "form-1", info)
    assert again.copied is False
    assert again.copy == first.copy
    assert itwin.calls["download"] == 1


def test_a_large_file_streams_through_multipart(aws, itwin, archiver):
    data = blob(LARGE)
    info = _info(itwin, "survey.las", data)
    archived = archiver.ensure("forms", "form-1", info)
    assert archived.copy.sha256 == hashlib.sha256(data).hexdigest()
    assert _final(aws, archived.copy.key)[0] == data
    assert leftovers(aws) == NOTHING_LEFT


def _plant(aws, key: str, body: bytes, **metadata: str) -> None:
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=body, Metadata=metadata)


@pytest.mark.parametrize(
    ("planted", "why"),
    [
        ({"body": b"short", "attachment-id": "ATT", "sha256": "x"}, "the size differs"),
        ({"body": b"%PDF-1.7 ...", "attachment-id": "att-other", "sha256": "x"}, "another attachment's copy"),
        ({"body": b"%PDF-1.7 ...", "attachment-id": "ATT"}, "no sha256: not written by the archive"),
        ({"body": b"%PDF-1.7 ..."}, "no metadata at all"),
    ],
)
def test_a_stale_copy_is_replaced(aws, itwin, archiver, planted, why):
    info = _info(itwin)
    key = archiver.key("forms", "form-1", info)
    meta = {k: (info.id if v == "ATT" else v) for k, v in planted.items() if k != "body"}
    _plant(aws, key, planted["body"], **meta)
    archived = archiver.ensure("forms", "form-1", info)
    assert archived.copied is True, why
    assert itwin.calls["download"] == 1
    body, metadata, _ = _final(aws, key)
    assert body == b"%PDF-1.7 ..."
    assert metadata["attachment-id"] == info.id
    assert metadata["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_copy_of_unknown_size_is_current_when_it_is_this_attachments(itwin, archiver):
    info = _info(itwin)
    archiver.ensure("forms", "form-1", info)
    unsized = AttachmentInfo(info.id, info.fileName)
    assert archiver.ensure("forms", "form-1", unsized).copied is False


def test_past_the_deadline_the_copy_times_out_and_leaves_nothing(aws, itwin, archiver):
    info = _info(itwin, "survey.las", blob(LARGE))
    ticks = count(0, 1.0)  # one second a chunk
    with pytest.raises(e.CopyTimedOutError) as raised:
        archiver.ensure("forms", "form-1", info, deadline=6.5, clock=lambda: next(ticks))
    assert raised.value.outcome is e.Outcome.RETRY
    assert archiver.store.find(archiver.key("forms", "form-1", info)) is None
    assert leftovers(aws) == NOTHING_LEFT
    assert itwin.downloads[-1].raw.closed


def test_within_the_deadline_the_copy_is_made(itwin, archiver):
    info = _info(itwin, "survey.las", blob(3 * MiB))
    ticks = count(0, 1.0)
    assert archiver.ensure("forms", "form-1", info, deadline=10, clock=lambda: next(ticks)).copied is True


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
        requests.ConnectionError("reset by peer"),
        requests.exceptions.ReadTimeout("read timed out"),
    ],
    ids=["chunked", "reset", "read-timeout"],
)
@pytest.mark.parametrize("size", [3 * MiB, LARGE], ids=["one-part", "multipart"])
def test_a_dropped_stream_is_a_retryable_download_interruption(aws, itwin, archiver, error, size):
    info = _info(itwin, "survey.las", blob(size))
    held = itwin.stored(info.id)
    held.break_after, held.error = 2, error
    with pytest.raises(e.VendorConnectionError) as raised:
        archiver.ensure("forms", "form-1", info)
    assert raised.value.code == "DownloadInterrupted"
    assert raised.value.outcome is e.Outcome.RETRY
    assert archiver.store.find(archiver.key("forms", "form-1", info)) is None
    assert leftovers(aws) == NOTHING_LEFT
    assert itwin.downloads[-1].raw.closed


def test_a_download_shorter_than_listed_is_incomplete(aws, itwin, archiver):
    info = _info(itwin, "r.pdf", b"abc")
    itwin.stored(info.id).data = b"ab"
    with pytest.raises(e.IncompleteDownloadError):
        archiver.ensure("forms", "form-1", info)
    assert archiver.store.find(archiver.key("forms", "form-1", info)) is None


def test_another_writer_first_is_kept_and_counted_not_copied(aws, itwin, archiver, store):
    info = _info(itwin)
    key = archiver.key("forms", "form-1", info)

    class Racing(ArchiveStore):
        def find(self, key: str) -> ArchivedCopy | None:
            seen = super().find(key)
            if seen is None:  # between our HEAD and our PUT, another copy lands
                ArchiveStore.write(self, key, iter([b"%PDF-1.7 ..."]), META, content_type="x", replace=True)
            return seen

    racing = Archiver(itwin, Racing(aws.s3, aws.bucket, part_size=PART))
    archived = racing.ensure("forms", "form-1", info)
    assert archived.copied is False
    assert archived.copy.key == key
    assert len(aws.s3.list_object_versions(Bucket=aws.bucket, Prefix=key)["Versions"]) == 1


# -- the archive worker ----------------------------------------------------------------------------


def _record(body: dict[str, Any] | str, receives: int = 1) -> Any:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    return SQSRecord(
        {
            "messageId": "m-1",
            "body": body if isinstance(body, str) else json.dumps(body),
            "attributes": {"ApproximateReceiveCount": str(receives)},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
        }
    )


@pytest.fixture
def worker(aws, itwin, store) -> tuple[ArchiveFlow, ArchiveJobs]:
    jobs = ArchiveJobs(aws.tables["ArchiveJobsTable"], aws.dynamodb)
    settings = Settings.load({}, max_receive_count=3, archive_bucket=aws.bucket)
    return ArchiveFlow(settings, Archiver(itwin, store), jobs), jobs


def _queued(itwin: ArchiveItwin, jobs: ArchiveJobs, data: bytes = b"%PDF-1.7 ...") -> tuple[dict[str, Any], str]:
    info = _info(itwin, "r.pdf", data)
    job, _ = jobs.start("forms", "form-1", 1)
    return ArchiveRequest("forms", "form-1", info, job.job_id).body(), job.job_id


def test_the_worker_archives_then_skips_and_counts_the_attachment_once(worker, itwin, lambda_context):
    flow, jobs = worker
    body, job_id = _queued(itwin, jobs)
    assert flow.handle_record(_record(body), lambda_context) is Result.ARCHIVED
    assert flow.handle_record(_record(body, receives=2), lambda_context) is Result.SKIPPED
    job = jobs.get(job_id)
    assert (job.state, job.archived, job.skipped) == (JobState.SUCCEEDED, 1, 0)


def test_a_retryable_failure_goes_back_to_the_queue_until_the_last_delivery(worker, itwin, lambda_context):
    flow, jobs = worker
    body, job_id = _queued(itwin, jobs, blob(3 * MiB))
    held = itwin.stored(body["attachment"]["id"])
    held.break_after, held.error = 1, requests.exceptions.ChunkedEncodingError("broken")
    for receives in (1, 2):
        with pytest.raises(e.VendorConnectionError):
            flow.handle_record(_record(body, receives), lambda_context)
        assert jobs.get(job_id).settled == 0
    assert flow.handle_record(_record(body, receives=3), lambda_context) is Result.FAILED
    job = jobs.get(job_id)
    assert job.state is JobState.COMPLETED_WITH_FAILURES
    assert [(f.attachment_id, f.code) for f in job.failures] == [(body["attachment"]["id"], "DownloadInterrupted")]


def test_a_failure_that_cannot_pass_later_is_counted_at_once(worker, itwin, lambda_context, monkeypatch):
    flow, jobs = worker
    body, job_id = _queued(itwin, jobs)

    def gone(*args: Any) -> Any:
        raise e.NotFoundError("Requested attachment is not available.", http_status=404, code="AttachmentNotFound")

    monkeypatch.setattr(itwin, "download", gone)
    assert flow.handle_record(_record(body), lambda_context) is Result.FAILED
    assert jobs.get(job_id).failures[0].code == "AttachmentNotFound"


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        {"kind": "photos", "parentId": "p", "attachment": {"id": "a", "fileName": "f"}},
        {"kind": "forms", "parentId": "..", "attachment": {"id": "a", "fileName": "f"}},
        {"kind": "forms", "parentId": "p", "attachment": {"id": "a/b", "fileName": "f"}},
        {"kind": "forms", "parentId": "p"},
    ],
)
def test_a_message_that_is_not_an_archive_request_is_malformed(worker, lambda_context, body):
    flow, _ = worker
    with pytest.raises(e.MalformedMessageError):
        flow.handle_record(_record(body), lambda_context)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300) | st.dictionaries(st.text(max_size=10), st.text(max_size=10)).map(json.dumps))
def test_any_body_parses_or_is_malformed(body):
    try:
        request = ArchiveRequest.parse(body)
    except e.MalformedMessageError:
        return
    assert ArchiveRequest.parse(json.dumps(request.body())) == request
