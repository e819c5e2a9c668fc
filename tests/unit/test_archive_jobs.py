"""Archive jobs (DynamoDB, moto in-process from template.yaml) and the work queue's batching (a fake SQS)."""

from __future__ import annotations

import time
from itertools import count

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from relay import errors as e
from relay.aws.jobs import ArchiveJobs, Failure, JobState, Result
from relay.aws.queues import WorkQueue
from tests.unit.archive_fakes import FakeSqs

STALE = 600


class Clock:
    """Wall-clock seconds, moved on by hand: `now` is where the jobs think the time is."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(aws, clock) -> ArchiveJobs:
    ids = count(1)
    return ArchiveJobs(
        aws.tables["ArchiveJobsTable"], aws.dynamodb, stale_after=STALE, clock=clock, new_id=lambda: f"job-{next(ids)}"
    )


def test_a_new_job_is_running_with_its_total(jobs):
    job, created = jobs.start("forms", "form-1", 3)
    assert created is True
    assert (job.job_id, job.kind, job.parent_id, job.state, job.total) == ("job-1", "forms", "form-1", "running", 3)
    assert (job.archived, job.skipped, job.failed, job.failures) == (0, 0, 0, ())
    assert jobs.get("job-1") == job
    assert jobs.running("forms", "form-1") == job


def test_a_second_start_while_running_returns_the_same_job(jobs):
    first, _ = jobs.start("forms", "form-1", 3)
    again, created = jobs.start("forms", "form-1", 5)
    assert created is False
    assert again.job_id == first.job_id
    assert again.total == 3


def test_parents_of_another_kind_or_id_have_their_own_jobs(jobs):
    a, _ = jobs.start("forms", "form-1", 1)
    b, created_b = jobs.start("issues", "form-1", 1)
    c, created_c = jobs.start("forms", "form-10", 1)
    assert created_b
    assert created_c
    assert len({a.job_id, b.job_id, c.job_id}) == 3


@pytest.mark.parametrize(
    ("results", "state"),
    [
        ([Result.ARCHIVED, Result.ARCHIVED, Result.SKIPPED], JobState.SUCCEEDED),
        ([Result.SKIPPED, Result.SKIPPED, Result.SKIPPED], JobState.SUCCEEDED),
        ([Result.ARCHIVED, Result.FAILED, Result.SKIPPED], JobState.COMPLETED_WITH_FAILURES),
        ([Result.FAILED, Result.FAILED, Result.FAILED], JobState.COMPLETED_WITH_FAILURES),
    ],
)
def test_a_job_settles_when_every_attachment_is_counted(jobs, results, state):
    job, _ = jobs.start("forms", "form-1", len(results))
    for number, result in enumerate(results, start=1):
        job = jobs.record(job.job_id, f"att-{number}", result, "IssueNotFound" if result is Result.FAILED else "")
        if number < len(results):
            assert job.state is JobState.RUNNING
    assert job.state is state
    assert job.settled == job.total == 3
    assert job.archived == results.count(Result.ARCHIVED)
    assert job.skipped == results.count(Result.SKIPPED)
    assert job.failed == results.count(Result.FAILED)
    assert jobs.running("forms", "form-1") is None


def test_a_redelivered_outcome_is_counted_once(jobs):
    job, _ = jobs.start("forms", "form-1", 2)
    jobs.record(job.job_id, "att-1", Result.ARCHIVED)
    again = jobs.record(job.job_id, "att-1", Result.ARCHIVED)
    also = jobs.record(job.job_id, "att-1", Result.FAILED, "S3Error", "later attempt")  # not a second outcome
    assert (again.archived, again.failed, again.state) == (1, 0, JobState.RUNNING)
    assert also == again


def test_a_redelivery_after_settling_changes_nothing(jobs):
    job, _ = jobs.start("forms", "form-1", 1)
    done = jobs.record(job.job_id, "att-1", Result.ARCHIVED)
    again = jobs.record(job.job_id, "att-1", Result.ARCHIVED)
    assert done.state is JobState.SUCCEEDED
    assert (again.archived, again.state, again.failures) == (1, JobState.SUCCEEDED, ())


def test_a_settled_job_frees_its_parent_for_a_new_job(jobs):
    job, _ = jobs.start("forms", "form-1", 1)
    jobs.record(job.job_id, "att-1", Result.SKIPPED)
    new, created = jobs.start("forms", "form-1", 4)
    assert created is True
    assert new.job_id != job.job_id
    assert new.state is JobState.RUNNING
    assert jobs.get(job.job_id).state is JobState.SUCCEEDED  # the old job keeps its outcome


def test_a_parent_without_attachments_settles_at_once(jobs):
    job, created = jobs.start("issues", "issue-1", 0)
    assert created is True
    assert job.state is JobState.SUCCEEDED
    assert job.total == 0
    assert jobs.running("issues", "issue-1") is None
    assert jobs.start("issues", "issue-1", 0)[0].job_id != job.job_id


def test_failures_carry_each_attachments_code_and_message(jobs):
    job, _ = jobs.start("forms", "form-1", 3)
    jobs.record(job.job_id, "att-1", Result.FAILED, "AttachmentNotFound", "Requested attachment is not available.")
    jobs.record(job.job_id, "att-2", Result.ARCHIVED)
    done = jobs.record(job.job_id, "att-3", Result.FAILED, "DownloadInterrupted", "x" * 1000)
    assert done.state is JobState.COMPLETED_WITH_FAILURES
    assert done.failures == (
        Failure("att-1", "AttachmentNotFound", "Requested attachment is not available."),
        Failure("att-3", "DownloadInterrupted", "x" * 300),  # messages are kept short
    )


def test_a_failure_without_code_or_message_still_reads(jobs):
    job, _ = jobs.start("forms", "form-1", 1)
    done = jobs.record(job.job_id, "att-1", Result.FAILED)
    assert done.failures == (Failure("att-1", "Failed", ""),)


def test_a_running_job_that_has_not_moved_reads_stalled_not_running_forever(jobs, clock):
    stuck, _ = jobs.start("forms", "form-1", 2)
    jobs.record(stuck.job_id, "att-1", Result.ARCHIVED)  # its other message died with a killed invocation
    assert jobs.view(stuck.job_id).state is JobState.RUNNING
    clock.offset = STALE + 5
    assert jobs.view(stuck.job_id).state is JobState.STALLED
    assert jobs.get(stuck.job_id).state is JobState.RUNNING  # shown, never stored


def test_the_job_names_at_most_its_cap_of_failures_and_counts_every_one(jobs, monkeypatch):
    import relay.aws.jobs as module

    monkeypatch.setattr(module, "MAX_LISTED_FAILURES", 3)
    job, _ = jobs.start("forms", "form-1", 5)
    for i in range(5):
        done = jobs.record(job.job_id, f"att-{i}", Result.FAILED, "FileNotFound", "no file")
    assert (done.failed, len(done.failures), done.state) == (5, 3, JobState.COMPLETED_WITH_FAILURES)


def test_a_stale_running_job_does_not_block_a_new_one(jobs, clock):
    stuck, _ = jobs.start("forms", "form-1", 2)
    jobs.record(stuck.job_id, "att-1", Result.ARCHIVED)  # then its other message is lost
    clock.offset = STALE - 5
    assert jobs.running("forms", "form-1").job_id == stuck.job_id  # not yet stale
    clock.offset = STALE + 5
    assert jobs.running("forms", "form-1") is None
    new, created = jobs.start("forms", "form-1", 2)
    assert created is True
    assert new.job_id != stuck.job_id
    assert jobs.start("forms", "form-1", 2)[0].job_id == new.job_id
    # The lost message turns up after all: it counts in its own job, and the new job keeps the parent.
    jobs.record(stuck.job_id, "att-2", Result.ARCHIVED)
    assert jobs.get(stuck.job_id).state is JobState.SUCCEEDED
    assert jobs.running("forms", "form-1").job_id == new.job_id


def test_an_unknown_job_is_none(jobs):
    assert jobs.get("no-such-job") is None


def test_recording_for_an_unknown_job_is_a_record_store_error(jobs):
    with pytest.raises(e.RecordStoreError):
        jobs.record("no-such-job", "att-1", Result.ARCHIVED)


def test_a_missing_table_is_a_retryable_record_store_error(aws):
    jobs = ArchiveJobs("NoSuchTable", aws.dynamodb)
    with pytest.raises(e.RecordStoreError) as raised:
        jobs.start("forms", "form-1", 1)
    assert raised.value.outcome is e.Outcome.RETRY


# -- the work queue --------------------------------------------------------------------------------

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/ArchiveQueue"


def bodies(n: int) -> list[dict[str, int]]:
    return [{"n": i} for i in range(n)]


@pytest.mark.parametrize(("n", "batches"), [(0, []), (1, [1]), (10, [10]), (11, [10, 1]), (25, [10, 10, 5])])
def test_bodies_go_in_batches_of_ten(n, batches):
    sqs = FakeSqs()
    WorkQueue(sqs, URL).send(bodies(n))
    assert [len(call) for call in sqs.calls] == batches
    assert sqs.delivered == bodies(n)
    assert all(len({entry["Id"] for entry in call}) == len(call) for call in sqs.calls)


def test_bodies_are_compact_json():
    sqs = FakeSqs()
    WorkQueue(sqs, URL).send([{"kind": "forms", "parentId": "f-1"}])
    assert sqs.calls[0][0]["MessageBody"] == '{"kind":"forms","parentId":"f-1"}'


def test_refused_entries_are_sent_again_once():
    sqs = FakeSqs(refuse=[{"2", "7"}, set()])
    WorkQueue(sqs, URL).send(bodies(10))
    assert [[entry["Id"] for entry in call] for call in sqs.calls] == [[str(i) for i in range(10)], ["2", "7"]]
    assert sorted(body["n"] for body in sqs.delivered) == list(range(10))


def test_entries_refused_twice_are_unsent_and_so_is_every_later_batch():
    sqs = FakeSqs(refuse=[{"3", "4"}, {"4"}])
    with pytest.raises(e.QueueError) as raised:
        WorkQueue(sqs, URL).send(bodies(25))
    assert raised.value.unsent == [{"n": 4}, *bodies(25)[10:]]
    assert raised.value.outcome is e.Outcome.RETRY
    sent = [body["n"] for body in sqs.delivered]
    assert sorted(sent + [body["n"] for body in raised.value.unsent]) == list(range(25))  # each exactly once


def test_a_refusal_in_a_later_batch_names_only_that_batchs_bodies():
    sqs = FakeSqs(refuse=[set(), {"0"}, {"0"}])
    with pytest.raises(e.QueueError) as raised:
        WorkQueue(sqs, URL).send(bodies(15))
    assert raised.value.unsent == [{"n": 10}]


THROTTLED = ClientError({"Error": {"Code": "AWS.SimpleQueueService.RequestThrottled"}}, "SendMessageBatch")


@pytest.mark.parametrize(
    "error", [THROTTLED, EndpointConnectionError(endpoint_url=URL)], ids=["client-error", "no-connection"]
)
def test_a_failed_call_is_a_queue_error_naming_every_body_not_sent(error):
    sqs = FakeSqs(errors=[None, error])
    with pytest.raises(e.QueueError) as raised:
        WorkQueue(sqs, URL).send(bodies(15))
    assert raised.value.unsent == bodies(15)[10:]
    assert raised.value.__cause__ is error


def test_a_failed_resend_names_only_the_entries_that_were_refused():
    sqs = FakeSqs(refuse=[{"1", "8"}], errors=[None, THROTTLED])
    with pytest.raises(e.QueueError) as raised:
        WorkQueue(sqs, URL).send(bodies(12))
    assert raised.value.unsent == [{"n": 1}, {"n": 8}, {"n": 10}, {"n": 11}]
    assert [body["n"] for body in sqs.delivered] == [0, 2, 3, 4, 5, 6, 7, 9]
