"""The transfers table adapter against moto in-process, with the key schema read from template.yaml."""

from __future__ import annotations

import pytest

from relay.aws.s3events import Upload
from relay.aws.transfers import CLAIM_PREFIX, Status, Step, TransferRecords
from relay.errors import RecordStoreError

UP = Upload("uploads", "issues/I/a.jpg", "v1", "e1")
OTHER = Upload("uploads", "issues/I/a.jpg", "v2", "e2")


@pytest.fixture
def records(aws) -> TransferRecords:
    return TransferRecords(aws.tables["TransfersTable"], aws.dynamodb, clock=lambda: 1_800_000_000.0)


def test_begin_counts_attempts_and_keeps_what_earlier_ones_recorded(aws, records):
    first = records.begin(UP, "issues/I", "a.jpg")
    assert (first.step, first.status, first.attempts) == (Step.RECEIVED, Status.PROCESSING, 1)
    records.update(UP, step=Step.CREATED, attachment_id="att-1", location="https://api/x")
    again = records.begin(UP, "issues/I", "a.jpg")
    assert (again.step, again.attachment_id, again.location, again.attempts) == (
        Step.CREATED,
        "att-1",
        "https://api/x",
        2,
    )
    item = aws.record(UP.identity)
    assert (item["target"], item["file_name"], item["version_id"], item["etag"]) == ("issues/I", "a.jpg", "v1", "e1")
    assert item["created_at"] == "2027-01-15T08:00:00.000Z"
    assert int(item["expires_at"]) == 1_800_000_000 + 90 * 24 * 3600


def test_update_sets_numbers_sets_and_removes(aws, records):
    records.begin(UP, None, None)
    records.update(UP, bytes=12, suspected_orphans=["b", "a"], error_code="X", location="L")
    records.update(UP, error_code=None, remove=("location",))
    item = aws.record(UP.identity)
    assert (item["bytes"], sorted(item["suspected_orphans"])) == ("12", ["a", "b"])
    assert "error_code" not in item
    assert "location" not in item


def test_the_by_status_index_finds_failures(aws, records):
    records.begin(UP, "issues/I", "a.jpg")
    records.update(UP, status=Status.FAILED)
    found = aws.dynamodb.query(
        TableName=aws.tables["TransfersTable"],
        IndexName="by-status",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "failed"}},
    )["Items"]
    assert [i["upload"]["S"] for i in found] == [UP.identity]


def test_a_claim_has_one_owner(aws, records):
    assert records.claim("itwin:issues/I/att-1", UP)
    assert records.claim("itwin:issues/I/att-1", UP)  # claiming one's own again is fine
    assert not records.claim("itwin:issues/I/att-1", OTHER)
    item = aws.record(CLAIM_PREFIX + "itwin:issues/I/att-1")
    assert item["owner"] == UP.identity
    assert "status" not in item  # claims stay out of the by-status index


def test_table_errors_are_record_store_errors(aws):
    broken = TransferRecords("missing-table", aws.dynamodb)
    with pytest.raises(RecordStoreError, match="missing-table"):
        broken.begin(UP, None, None)
    with pytest.raises(RecordStoreError):
        broken.claim("x", UP)
