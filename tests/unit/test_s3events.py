"""S3 notification bodies and upload keys: tables plus properties over any Unicode."""

from __future__ import annotations

import contextlib
import json
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.aws.s3events import Upload, parse_message
from relay.errors import InvalidUploadError, MalformedMessageError
from relay.flows.s3_to_itwin.targets import parse_target
from tests.conftest import load_event


@pytest.mark.parametrize(
    ("key", "kind", "parent", "name"),
    [
        ("issues/ISSUE-1/photo.jpg", "issues", "ISSUE-1", "photo.jpg"),
        ("forms/F 2/Inspection report.pdf", "forms", "F 2", "Inspection report.pdf"),
        ("issues/Ünï/Müller – façade 東京.png", "issues", "Ünï", "Müller – façade 東京.png"),
        ("issues/1/.hidden", "issues", "1", ".hidden"),
    ],
)
def test_valid_keys(key, kind, parent, name):
    target = parse_target(key)
    assert (target.kind, target.parent_id, target.file_name) == (kind, parent, name)


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("photos/ISSUE-1/a.jpg", "UnknownPrefix"),
        ("archive/a.jpg", "UnknownPrefix"),
        ("issues//a.jpg", "EmptyKeySegment"),
        ("issues/ISSUE-1/", "EmptyKeySegment"),
        ("issues/ISSUE-1", "EmptyKeySegment"),
        ("issues/../a.jpg", "DotKeySegment"),
        ("issues/1/..", "DotKeySegment"),
        ("issues/1/a\x07.jpg", "ControlCharacter"),
        ("issues/1\n/a.jpg", "ControlCharacter"),
        ("issues/1/a\u202e.jpg", "ControlCharacter"),
        ("issues/1/sub/a.jpg", "NestedKey"),
        ("issues/" + "x" * 129 + "/a.jpg", "KeySegmentTooLong"),
        ("issues/1/" + "y" * 256, "KeySegmentTooLong"),
    ],
)
def test_invalid_keys_get_named_errors(key, code):
    with pytest.raises(InvalidUploadError) as info:
        parse_target(key)
    assert info.value.code == code


file_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"), blacklist_characters="/"),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip() and s not in (".", ".."))


@given(file_names, st.sampled_from(["issues", "forms"]))
def test_any_unicode_file_name_survives_url_encoding(name, kind):
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "b"},
                        "object": {"key": quote_plus(f"{kind}/ID-1/{name}", safe="/"), "eTag": "e"},
                    },
                }
            ]
        }
    )
    (upload,) = parse_message(body).uploads
    target = parse_target(upload.key)
    assert target.kind == kind
    assert target.parent_id == "ID-1"
    import unicodedata

    assert target.file_name == unicodedata.normalize("NFC", name)


@given(st.text(max_size=200))
def test_parse_message_never_crashes_on_junk(body):
    with contextlib.suppress(MalformedMessageError):
        parse_message(body)


def test_plus_is_a_space_and_encoded_plus_is_a_plus():
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "b"},
                        "object": {"key": "issues/1/a+b%2Bc.jpg", "eTag": '"e1"', "size": 3},
                    },
                }
            ]
        }
    )
    (upload,) = parse_message(body).uploads
    assert upload == Upload("b", "issues/1/a b+c.jpg", None, "e1", 3)


def test_test_event_is_skipped_and_sample_events_parse():
    assert parse_message(load_event("s3-test-event.json")["Records"][0]["body"]).test_event
    (photo,) = parse_message(load_event("s3-put-issue-photo.json")["Records"][0]["body"]).uploads
    assert photo.key == "issues/ISSUE-1001/Cracked concrete – bay 3 (Müller).jpg"
    (form,) = parse_message(load_event("s3-put-form-report.json")["Records"][0]["body"]).uploads
    assert parse_target(form.key).kind == "forms"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        ("{}", "no Records"),
    ],
)
def test_malformed_messages(body, fragment):
    with pytest.raises(MalformedMessageError, match=fragment):
        parse_message(body)


def test_version_id_names_the_upload_else_etag():
    assert Upload("b", "k", "v1", "e").identity == "b/k#v1"
    assert Upload("b", "k", None, "e").identity == "b/k#etag:e"


@pytest.mark.parametrize(
    "record",
    [{"s3": {}}, {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": 1}, "object": {"key": "k"}}}, "text"],
)
def test_a_bad_record_is_reported_beside_the_good_ones(record):
    good = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "eTag": "e"}}}
    notification = parse_message(json.dumps({"Records": [record, good]}))
    assert [u.key for u in notification.uploads] == ["k"]
    assert notification.malformed[0].startswith("record 0")


def test_a_record_with_neither_version_nor_etag_is_malformed_not_a_wildcard():
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "issues/1/a.jpg"}}}
    notification = parse_message(json.dumps({"Records": [record]}))
    assert notification.uploads == []
    assert "neither a versionId nor an eTag" in notification.malformed[0]


def test_non_creation_records_are_named_not_taken_for_test_events():
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectRemoved:Delete",
                    "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "eTag": "e"}},
                }
            ]
        }
    )
    notification = parse_message(body)
    assert notification.uploads == []
    assert not notification.test_event
    assert "ObjectRemoved:Delete" in notification.ignored[0]


def test_deeply_nested_junk_is_malformed_not_a_recursion_error():
    with pytest.raises(MalformedMessageError):
        parse_message("[" * 100_000)


def test_an_oversized_body_is_refused_before_parsing():
    with pytest.raises(MalformedMessageError, match="at most"):
        parse_message(" " * (300 * 1024))


@pytest.mark.parametrize("name", ["👨\u200d👩\u200d👧 family.jpg", "क्\u200dष.jpg"])
def test_zero_width_joiners_inside_names_are_allowed(name):
    assert parse_target(f"issues/1/{name}").file_name == name


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200f", "\ufeff", "\x00", "\x9b"])
def test_bidi_overrides_nul_and_c1_are_refused(char):
    with pytest.raises(InvalidUploadError) as info:
        parse_target(f"issues/1/a{char}b.jpg")
    assert info.value.code == "ControlCharacter"


def test_a_null_version_id_falls_back_to_the_etag():
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "versionId": "null", "eTag": "e1"}},
    }
    (upload,) = parse_message(json.dumps({"Records": [record]})).uploads
    assert upload.identity == "b/k#etag:e1"


def test_a_record_without_an_event_name_is_named_and_ignored():
    record = {"s3": {"bucket": {"name": "b"}, "object": {"key": "k", "eTag": "e"}}}
    notification = parse_message(json.dumps({"Records": [record]}))
    assert notification.uploads == []
    assert "eventName None" in notification.ignored[0]


def test_emoji_newer_than_the_runtime_are_allowed():
    assert parse_target("issues/1/\U0001fae8 shaking face.jpg").file_name.endswith("shaking face.jpg")


@pytest.mark.parametrize(
    ("raw_key", "fragment"),
    [
        ("issues/1/bad%zz.jpg", "not percent-encoded"),
        ("issues/1/100%.jpg", "not percent-encoded"),
        ("issues/1/caf%E9.jpg", "not UTF-8"),
        ("issues/1/%C3.jpg", "not UTF-8"),
    ],
)
def test_a_key_that_is_not_percent_encoded_utf8_is_malformed_not_guessed(raw_key, fragment):
    """S3 encodes every key as UTF-8 and every '%' as %25: anything else names no object."""
    good = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "eTag": "e"}}}
    bad = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": raw_key, "eTag": "e"}}}
    notification = parse_message(json.dumps({"Records": [bad, good]}))
    assert [u.key for u in notification.uploads] == ["k"]
    assert notification.malformed[0].startswith("record 0 has a key")
    assert fragment in notification.malformed[0]


def test_an_encoded_percent_is_a_percent():
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "a%2500.jpg", "eTag": "e"}},
    }
    (upload,) = parse_message(json.dumps({"Records": [record]})).uploads
    assert upload.key == "a%00.jpg"


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (("v1", '"e1"'), ("v1", None), True),  # a re-sent notification without the eTag: the same version
        (("v1", '"e1"'), ("v1", '"e2"'), True),  # the version names the upload
        (("v1", '"e1"'), ("v2", '"e1"'), False),  # two versions with one content are two uploads
        ((None, '"e1"'), (None, '"e1"'), True),  # an unversioned bucket: the eTag names it
        ((None, '"e1"'), (None, '"e2"'), False),
    ],
)
def test_the_idempotency_key_is_the_version_or_else_the_etag(first, second, same):
    import dataclasses

    import jmespath  # type: ignore[import-untyped]

    from relay.aws.s3events import IDEMPOTENCY_KEY, Upload

    def key(version: str | None, etag: str | None) -> object:
        return jmespath.search(IDEMPOTENCY_KEY, dataclasses.asdict(Upload("b", "k", version, etag)))

    assert (key(*first) == key(*second)) is same
