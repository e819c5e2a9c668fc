"""The webhook verifier: a table of what is accepted and refused, and a property test of 2,000+ forgeries."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import ConfigurationError
from relay.flows.archive import ArchiveRequest
from relay.flows.itwin_webhooks import WebhookSecrets, sign, verify
from relay.flows.itwin_webhooks.signature import parse_signature, signature_values

SECRET = "s" * 32 + "-current"
PREVIOUS = "p" * 32 + "-previous"
OTHER = "o" * 40
BODY = json.dumps({"messageId": "m-1", "eventType": "forms.attachmentAttached.v1", "content": {}}).encode()
BOTH = WebhookSecrets(SECRET, PREVIOUS)
GOOD = sign(SECRET, BODY)
HEX = GOOD.removeprefix("sha256=")


@pytest.mark.parametrize(
    ("values", "body", "secrets", "accepted"),
    [
        ([GOOD], BODY, BOTH, True),
        ([sign(PREVIOUS, BODY)], BODY, BOTH, True),  # rotation: the previous secret still verifies
        ([sign(PREVIOUS, BODY)], BODY, WebhookSecrets(SECRET), False),  # ...until it is removed
        ([], BODY, BOTH, False),  # missing
        ([""], BODY, BOTH, False),  # empty
        ([GOOD, GOOD], BODY, BOTH, False),  # repeated, even identical
        ([HEX], BODY, BOTH, False),  # no prefix
        (["sha1=" + hashlib.sha1(BODY).hexdigest()], BODY, BOTH, False),  # noqa: S324 - a forgery
        (["SHA256=" + HEX], BODY, BOTH, False),  # the prefix is lower case
        (["sha256=" + HEX.upper()], BODY, BOTH, False),  # the hex is lower case
        ([" " + GOOD], BODY, BOTH, False),
        ([GOOD + " "], BODY, BOTH, False),
        ([GOOD + "\t"], BODY, BOTH, False),
        (["sha256= " + HEX], BODY, BOTH, False),
        ([GOOD[:-1]], BODY, BOTH, False),  # truncated
        ([GOOD + "0"], BODY, BOTH, False),  # too long
        ([sign(OTHER, BODY)], BODY, BOTH, False),  # another secret
        ([sign(SECRET, BODY + b" ")], BODY, BOTH, False),  # another body
        ([GOOD], BODY[:-1] + b"!", BOTH, False),  # one byte changed
        (["sha256=" + "g" * 64], BODY, BOTH, False),  # not hex
        (["sha256=" + "0" * 64], BODY, BOTH, False),
    ],
)
def test_the_verifier_table(values: list[str], body: bytes, secrets: WebhookSecrets, accepted: bool) -> None:
    assert verify(body, values, secrets) is accepted


def test_the_header_is_found_in_any_case_and_every_value_counts() -> None:
    assert signature_values({"signature": GOOD}, None) == [GOOD]
    assert signature_values({"Signature": GOOD}, {"Signature": [GOOD], "SIGNATURE": [GOOD]}) == [GOOD, GOOD]
    assert signature_values({"Other": "x"}, {}) == []
    assert parse_signature([GOOD]) == bytes.fromhex(HEX)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "text",
        {},
        {"current": ""},
        {"current": "x" * 31},
        {"current": "x" * 32, "previous": "y" * 31},
        {"current": 7},
    ],
)
def test_a_secret_shorter_than_32_characters_or_malformed_is_a_configuration_error(raw: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        WebhookSecrets.parse(raw, secret_id="hooks")
    assert "x" * 31 not in str(caught.value)  # no value in the error


def test_secrets_never_show_in_repr() -> None:
    assert SECRET not in repr(BOTH)
    assert PREVIOUS not in repr(BOTH)
    assert WebhookSecrets.parse({"current": SECRET}, secret_id="h") == WebhookSecrets(SECRET)


def test_an_archive_request_may_carry_just_the_attachment_id_and_old_bodies_stay_valid() -> None:
    request = ArchiveRequest.by_id("forms", "F-1", "A-1")
    parsed = ArchiveRequest.parse(json.dumps(request.body()))
    assert parsed == request
    assert parsed.attachment is None
    assert parsed.attachment_id == "A-1"
    old = {"kind": "issues", "parentId": "I-1", "attachment": {"id": "A-2", "fileName": "a.jpg"}, "jobId": None}
    assert ArchiveRequest.parse(json.dumps(old)).attachment_id == "A-2"


# -- forgeries ----------------------------------------------------------------------------------------

bodies = st.binary(min_size=0, max_size=512)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)


@st.composite
def forgeries(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """(body, Signature values) that must never verify under BOTH."""
    body = draw(bodies)
    good = sign(SECRET, body)
    kind = draw(st.sampled_from(range(11)))
    if kind == 0:  # a random signature
        return body, ["sha256=" + draw(hex64)]
    if kind == 1:  # a valid signature for another body
        other = draw(bodies.filter(lambda b: b != body))
        return body, [sign(SECRET, other)]
    if kind == 2:  # another secret
        secret = draw(st.text(min_size=32, max_size=64).filter(lambda s: s not in (SECRET, PREVIOUS)))
        return body, [sign(secret, body)]
    if kind == 3:  # truncated
        return body, [good[: draw(st.integers(0, len(good) - 1))]]
    if kind == 4:  # sha1
        return body, ["sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()]
    if kind == 5:  # empty header
        return body, [""]
    if kind == 6:  # upper-case hex (at least one letter in it)
        value = good.removeprefix("sha256=")
        if value.upper() == value:
            value = "a" + value[1:]
            return body, ["sha256=" + value.upper()]
        return body, ["sha256=" + value.upper()]
    if kind == 7:  # whitespace around or inside
        space = draw(st.sampled_from([" ", "\t", "\n", "\r\n"]))
        where = draw(st.sampled_from(["before", "after", "inside"]))
        value = {"before": space + good, "after": good + space, "inside": "sha256=" + space + good[7:]}[where]
        return body, [value]
    if kind == 8:  # repeated
        return body, [good] * draw(st.integers(2, 4))
    if kind == 9:  # the body changed by one byte
        if not body:
            return b"x", [sign(SECRET, b"")]
        at = draw(st.integers(0, len(body) - 1))
        flip = draw(st.integers(1, 255))
        changed = body[:at] + bytes([body[at] ^ flip]) + body[at + 1 :]
        return changed, [good]
    return body, [draw(st.text(max_size=80))]  # random text


@settings(max_examples=2000, deadline=None)
@given(forgeries())
def test_no_forgery_verifies(forgery: tuple[bytes, list[str]]) -> None:
    body, values = forgery
    assert not verify(body, values, BOTH)


@settings(max_examples=200, deadline=None)
@given(bodies, st.sampled_from([SECRET, PREVIOUS]))
def test_every_genuine_delivery_verifies(body: bytes, secret: str) -> None:
    assert verify(body, [sign(secret, body)], BOTH)
