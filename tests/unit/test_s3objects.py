"""The S3 adapter against moto in-process: HEAD, streamed GET, tags that keep the user's, and one error mapping."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from relay.aws.s3events import Upload
from relay.aws.s3objects import MAX_TAGS, ObjectStore, decode_metadata
from relay.errors import ObjectGoneError, ObjectStoreError
from tests.s3_roles import WithoutListBucket


def upload_of(aws, key: str, fields: dict[str, Any]) -> Upload:
    return Upload(aws.bucket, key, fields["versionId"], fields["eTag"])


def test_head_reads_size_version_type_and_decoded_metadata(aws):
    fields = aws.put("issues/I/a.jpg", b"abc", caption="=?UTF-8?B?Q2Fmw6k=?=", Binding="b")
    info = ObjectStore(aws.s3).head(upload_of(aws, "issues/I/a.jpg", fields))
    assert (info.size, info.version_id, info.etag) == (3, fields["versionId"], fields["eTag"])
    assert info.metadata == {"caption": "Café", "binding": "b"}


def test_open_streams_the_named_version(aws):
    old = aws.put("issues/I/b.jpg", b"old bytes")
    aws.put("issues/I/b.jpg", b"new bytes")
    stream = ObjectStore(aws.s3).open(upload_of(aws, "issues/I/b.jpg", old), 9)
    assert len(stream) == 9  # type: ignore[arg-type]
    assert stream.read(4) + stream.read() == b"old bytes"
    stream.close()


def test_a_missing_version_is_gone_for_head_open_and_tag(aws):
    fields = aws.put("issues/I/c.jpg", b"x")
    aws.s3.delete_object(Bucket=aws.bucket, Key="issues/I/c.jpg", VersionId=fields["versionId"])
    store, up = ObjectStore(aws.s3), upload_of(aws, "issues/I/c.jpg", fields)
    for call in (lambda: store.head(up), lambda: store.open(up, 1), lambda: store.tag(up, "failed", None, "X")):
        with pytest.raises(ObjectGoneError):
            call()


def test_tags_keep_the_users_own_and_ours_win_the_tenth_slot(aws):
    fields = aws.put("issues/I/d.jpg", b"x")
    up = upload_of(aws, "issues/I/d.jpg", fields)
    user = [{"Key": f"user-{i}", "Value": str(i)} for i in range(9)]
    aws.s3.put_object_tagging(Bucket=aws.bucket, Key=up.key, VersionId=up.version_id, Tagging={"TagSet": user})
    ObjectStore(aws.s3).tag(up, "attached", "att-1", None)
    tags = aws.tags(up.key, up.version_id)
    assert len(tags) == MAX_TAGS
    assert (tags["relay-status"], tags["relay-attachment-id"]) == ("attached", "att-1")
    assert "user-8" in tags
    assert "user-0" not in tags  # the oldest of the user's gave way


class Unreachable:
    """An S3 client whose network is down: every call raises what botocore raises then."""

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> Any:
            if name == "get_object":
                raise ConnectTimeoutError(endpoint_url="https://s3")
            raise EndpointConnectionError(endpoint_url="https://s3")

        return call


@pytest.mark.parametrize("op", ["head", "open", "tag"])
def test_network_errors_are_object_store_errors_in_every_call(op):
    store, up = ObjectStore(Unreachable()), Upload("b", "issues/I/e.jpg", None, "e")
    calls = {
        "head": lambda: store.head(up),
        "open": lambda: store.open(up, 1),
        "tag": lambda: store.tag(up, "x", None, None),
    }
    with pytest.raises(ObjectStoreError) as info:
        calls[op]()
    assert info.value.outcome == "retry"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain caption", "plain caption"),
        ("=?UTF-8?B?" + "Q2Fmw6kg4oCTIGJheSAz" + "?=", "Café – bay 3"),
        ("=?utf-8?q?Caf=C3=A9?=", "Café"),
        ("=?bogus-charset?q?x?=", "=?bogus-charset?q?x?="),
        ("=?UTF-8?B?####?=", "=?UTF-8?B?####?="),  # undecodable text is kept as sent, never emptied
    ],
)
def test_rfc2047_metadata(raw, expected):
    assert decode_metadata(raw) == expected


@given(st.text(max_size=80))
def test_decode_metadata_never_loses_text(text):
    assert decode_metadata(text) or text == ""


def test_a_head_403_for_a_deleted_version_is_the_deleted_case(aws):
    fields = aws.put("issues/I/gone.jpg", b"x")
    aws.s3.delete_object(Bucket=aws.bucket, Key="issues/I/gone.jpg", VersionId=fields["versionId"])
    with pytest.raises(ObjectGoneError):
        ObjectStore(WithoutListBucket(aws.s3)).head(upload_of(aws, "issues/I/gone.jpg", fields))


def test_a_head_403_for_an_existing_version_is_a_retried_store_error(aws):
    fields = aws.put("issues/I/denied.jpg", b"x")
    with pytest.raises(ObjectStoreError) as info:
        ObjectStore(WithoutListBucket(aws.s3, always=True)).head(upload_of(aws, "issues/I/denied.jpg", fields))
    assert info.value.outcome == "retry"


def test_exists_for_unversioned_uploads_compares_the_etag(aws):
    fields = aws.put("issues/I/u.jpg", b"x")
    store = ObjectStore(aws.s3)
    assert store.exists(Upload(aws.bucket, "issues/I/u.jpg", None, fields["eTag"]))
    assert not store.exists(Upload(aws.bucket, "issues/I/u.jpg", None, "another"))
    assert not store.exists(Upload(aws.bucket, "issues/I/none.jpg", None, "e"))
