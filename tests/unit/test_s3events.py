"""S3 notification bodies and upload keys: tables plus properties over any Unicode."""

from __future__ import annotations

import contextlib
import json
from email.header import Header
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.aws.s3events import Upload, parse_message
from relay.aws.s3objects import decode_metadata
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
        ('{"Records": [{"s3": {}}]}', "record 0"),
    ],
)
def test_malformed_messages(body, fragment):
    with pytest.raises(MalformedMessageError, match=fragment):
        parse_message(body)


def test_version_id_names_the_upload_else_etag():
    assert Upload("b", "k", "v1", "e").identity == "b/k#v1"
    assert Upload("b", "k", None, "e").identity == "b/k#etag:e"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("plain caption", "plain caption"),
        ("=?UTF-8?B?" + "Q2Fmw6kg4oCTIGJheSAz" + "?=", "Café – bay 3"),
        ("=?utf-8?q?Caf=C3=A9?=", "Café"),
        ("=?bogus-charset?q?x?=", "=?bogus-charset?q?x?="),
    ],
)
def test_rfc2047_metadata(raw, expected):
    assert decode_metadata(raw) == expected


captions = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=80)


@given(captions.filter(lambda s: s.strip() == s and "  " not in s and s))
def test_rfc2047_round_trip(text):
    encoded = Header(text, "utf-8").encode()
    assert decode_metadata(encoded) == text
