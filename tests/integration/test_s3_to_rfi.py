"""S3 → RFI over real HTTP: the user's story, and every row of the issue's exactly-once and errors tables."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

import pytest

from devstack.invoke import LambdaContext, PumpReport, pump
from relay.vendors.aps import ApsClient
from tests.integration.conftest import Harness, s3_message, sha256

pytestmark = pytest.mark.integration
FUNCTION = "S3ToRfiFunction"
PROJECT = "b.demo-project"
MIB = 1024 * 1024
PHOTO = b"\xff\xd8\xff site photo " * 300


class SimulatedCrash(BaseException):
    """Stands for the runtime killing the function: not an Exception, so nothing cleans up."""


class Rfi:
    """The harness, seen from the RFI flow: its queue, its function, and the sandbox's DM and RFI state."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.container = harness.admin("POST", "aps/projects", {"hub": "b.demo-hub", "project": PROJECT})["container"]

    def new_rfi(self) -> str:
        rfi = f"RFI-{uuid.uuid4().hex[:8]}"
        self.h.admin("POST", "aps/rfis", {"container": self.container, "rfi": rfi})
        return rfi

    def key(self, rfi: str, name: str) -> str:
        return f"rfis/{PROJECT}/{rfi}/{name}"

    def deliver(self, **options: Any) -> PumpReport:
        return pump(self.h.stack, FUNCTION, **options)

    def settings(self, env: dict[str, str] | None = None) -> Any:
        from relay.settings import Settings

        return Settings.load(self.h.stack.env(FUNCTION) | (env or {}))

    def flow(self, env: dict[str, str] | None = None, *, timeout_s: float = 60, **injected: Any) -> Any:
        from relay.flows.s3_to_rfi import build_s3_to_rfi

        flow = build_s3_to_rfi(self.settings(env), **injected)
        flow.start_invocation(LambdaContext(FUNCTION, timeout_s=timeout_s))
        return flow

    def client(self, env: dict[str, str] | None = None, **options: Any) -> ApsClient:
        from relay.vendors.factory import aps_client

        return aps_client(self.settings(env), **options)

    def message(self, key: str) -> str:
        return s3_message(self.h.bucket, key, self.h.etag(key), self.version(key))

    def version(self, key: str) -> str:
        return str(self.h.s3.head_object(Bucket=self.h.bucket, Key=key)["VersionId"])

    def attachments(self, rfi: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.h.inspect()["aps"]["rfis"].get(f"{self.container}/{rfi}", [])
        return found

    def item(self, item_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.h.inspect()["aps"]["items"][item_id]
        return found

    def items_named(self, rfi: str, name: str) -> list[dict[str, Any]]:
        """The DM items an upload of `name` under `rfi` makes: named with the RFI id first."""
        return [i for i in self.h.inspect()["aps"]["items"].values() if i["name"] == f"{rfi} {name}"]

    def count(self, endpoint: str) -> int:
        return self.h.counts().get(endpoint, 0)


@pytest.fixture
def rfi(harness: Harness) -> Rfi:
    from relay import constants as c
    from relay.auth.secrets import SecretStore
    from relay.auth.tokens import refresh_secret
    from relay.settings import Settings
    from relay.vendors.factory import token_endpoint

    env = harness.stack.env(FUNCTION)
    store = SecretStore(env["RELAY_APS_SECRET_ID"], default_token_url="x", default_scope="y")
    endpoint = token_endpoint(Settings.load(env), c.DEFAULT_APS_TOKEN_URL)
    refresh_secret(store, harness.stack.client("secretsmanager"), endpoint, grant="refresh_token")
    for logical in ("RfiUploadQueue", "RfiUploadDeadLetterQueue"):
        harness.empty_queue(logical)
    harness.admin("PUT", "config", {"min_part_bytes": 5 * MIB})
    return Rfi(harness)


def test_a_12_mb_photo_becomes_an_rfi_attachment_in_three_parts(rfi: Rfi):
    h = rfi.h
    target = rfi.new_rfi()
    data = random.Random(9).randbytes(12 * MIB)
    key = rfi.key(target, "Site photo – level 2.jpg")
    version = h.put(key, data, caption="North wall crack")
    parts = rfi.count("aps.s3part")
    report = rfi.deliver()
    assert report.failed == 0
    (att,) = rfi.attachments(target)
    assert att["name"] == "Site photo – level 2.jpg"
    item = rfi.item(att["urn"])
    assert [v["sha256"] for v in item["versions"]] == [sha256(data)]
    assert rfi.count("aps.s3part") - parts == 2  # 12 MiB in 8 MiB parts (the default): two parts
    tags = h.tags(key, version)
    assert tags == {"relay-status": "attached", "relay-attachment-id": att["id"], "relay-dm-item": att["urn"]}
    record = h.record_for(key)
    assert record["status"] == "attached"
    assert record["rfi_attachment_id"] == att["id"]
    assert record["item_id"] == att["urn"]
    assert record["version_id"].endswith("?version=1")
    assert record["parts_done"] == "1,2"
    assert record["caption"] == "North wall crack"
    assert record["storage_object_id"].startswith("urn:adsk.objects:os.object:")
    assert int(record["bytes"]) == len(data)


def test_three_parts_with_a_5_mib_part_size_are_sent_in_parallel(rfi: Rfi):
    target = rfi.new_rfi()
    data = random.Random(3).randbytes(12 * MIB)
    key = rfi.key(target, "three.bin")
    rfi.h.put(key, data)
    before = rfi.count("aps.s3part")
    (outcome,) = rfi.flow({"RELAY_APS_PART_BYTES": str(5 * MIB)}).handle_message("m", rfi.message(key))
    assert outcome.status == "attached"
    assert rfi.count("aps.s3part") - before == 3
    assert rfi.h.record_for(key)["parts_done"] == "1,2,3"
    (att,) = rfi.attachments(target)
    assert rfi.item(att["urn"])["versions"][0]["sha256"] == sha256(data)


def test_a_reupload_of_the_same_name_is_a_new_version_attached_once(rfi: Rfi):
    target = rfi.new_rfi()
    name = f"drawing-{uuid.uuid4().hex[:6]}.pdf"
    key = rfi.key(target, name)
    rfi.h.put(key, b"%PDF v1")
    rfi.deliver()
    rfi.h.put(key, b"%PDF v2, revised")
    rfi.deliver()
    (att,) = rfi.attachments(target)
    (item,) = rfi.items_named(target, name)
    assert [v["sha256"] for v in item["versions"]] == [sha256(b"%PDF v1"), sha256(b"%PDF v2, revised")]
    records = [r for r in rfi.h.records() if r["key"] == key]
    assert {r["rfi_attachment_id"] for r in records} == {att["id"]}
    assert sorted(r["version_id"][-1] for r in records) == ["1", "2"]


# -- Exactly once -----------------------------------------------------------------------------


def test_the_notification_twice_makes_one_version_and_one_attachment(rfi: Rfi):
    target = rfi.new_rfi()
    name = f"dup-{uuid.uuid4().hex[:6]}.jpg"
    key = rfi.key(target, name)
    rfi.h.put(key, PHOTO)
    rfi.deliver()
    sqs = rfi.h.stack.client("sqs")
    sqs.send_message(QueueUrl=rfi.h.stack.resources["RfiUploadQueue"], MessageBody=rfi.message(key))
    rfi.deliver()
    assert len(rfi.attachments(target)) == 1
    (item,) = rfi.items_named(target, name)
    assert len(item["versions"]) == 1


def test_concurrent_duplicates_make_one_version_and_one_attachment(rfi: Rfi):
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    containers = [rfi.flow() for _ in range(2)]
    target = rfi.new_rfi()
    name = f"concurrent-{uuid.uuid4().hex[:6]}.jpg"
    key = rfi.key(target, name)
    rfi.h.put(key, PHOTO)
    rfi.h.empty_queue("RfiUploadQueue")
    body = rfi.message(key)
    rfi.h.fault("aps.s3part", latency_ms=800)  # keep the first one in flight
    outcomes: list[object] = []

    def run(container: Any) -> None:
        try:
            outcomes.extend(container.handle_message("m", body))
        except RetryLaterError as exc:
            outcomes.append(exc.__cause__)

    threads = [threading.Thread(target=run, args=(c,)) for c in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["IdempotencyAlreadyInProgressError", "TransferOutcome"]
    rfi.h.admin("DELETE", "faults")
    (again,) = containers[1].handle_message("m", body)
    assert again.status == "attached"
    assert len(rfi.attachments(target)) == 1
    (item,) = rfi.items_named(target, name)
    assert len(item["versions"]) == 1


def crashing(client: ApsClient, method: str, after: int = 0) -> ApsClient:
    """The client, whose container dies in `method` after `after` calls of it went through."""
    real = getattr(client, method)
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise SimulatedCrash()
        return real(*args, **kwargs)

    setattr(client, method, dying)
    return client


def dies_after_parts(client: ApsClient, parts: int) -> ApsClient:
    """The container dies once `parts` part PUTs have been answered."""
    real = client.part_uploader.request
    calls = {"n": 0}
    lock = threading.Lock()

    def request(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls["n"] += 1
            if calls["n"] > parts:
                raise SimulatedCrash()
        return real(*args, **kwargs)

    client.part_uploader.request = request  # type: ignore[method-assign,assignment]
    return client


def resume(rfi: Rfi, key: str) -> Any:
    """A fresh container takes the message again once the dead one's idempotency lock has expired."""
    time.sleep(1.6)
    (outcome,) = rfi.flow().handle_message("m", rfi.message(key))
    return outcome


def test_a_crash_after_some_parts_sends_only_the_missing_parts(rfi: Rfi):
    target = rfi.new_rfi()
    data = random.Random(5).randbytes(16 * MIB)
    key = rfi.key(target, f"parts-{uuid.uuid4().hex[:6]}.bin")
    rfi.h.put(key, data)
    env = {"RELAY_APS_PART_BYTES": str(5 * MIB), "RELAY_APS_PART_CONCURRENCY": "1"}
    dying = rfi.flow(env, timeout_s=1.5, aps=dies_after_parts(rfi.client(env), 2))
    with pytest.raises(SimulatedCrash):
        dying.handle_message("m", rfi.message(key))
    record = rfi.h.record_for(key)
    assert record["parts_done"] == "1,2"
    before, storage = rfi.count("aps.s3part"), rfi.count("aps.storage")
    time.sleep(1.6)
    (outcome,) = rfi.flow(env).handle_message("m", rfi.message(key))
    assert outcome.status == "attached"
    assert rfi.count("aps.s3part") - before == 2  # parts 3 and 4 only
    assert rfi.count("aps.storage") == storage
    (att,) = rfi.attachments(target)
    assert rfi.item(att["urn"])["versions"][0]["sha256"] == sha256(data)


def test_a_crash_after_complete_creates_the_item_from_the_recorded_object(rfi: Rfi):
    target = rfi.new_rfi()
    key = rfi.key(target, f"complete-{uuid.uuid4().hex[:6]}.jpg")
    rfi.h.put(key, PHOTO)
    dying = rfi.flow(timeout_s=1.5, aps=crashing(rfi.client(), "create_item"))
    with pytest.raises(SimulatedCrash):
        dying.handle_message("m", rfi.message(key))
    assert rfi.h.record_for(key)["step"] == "uploaded"
    counts = {e: rfi.count(e) for e in ("aps.storage", "aps.s3part", "aps.complete", "aps.signeds3upload")}
    assert resume(rfi, key).status == "attached"
    assert {e: rfi.count(e) for e in counts} == counts  # no second upload
    (att,) = rfi.attachments(target)
    assert rfi.item(att["urn"])["versions"][0]["sha256"] == sha256(PHOTO)


def test_a_crash_after_the_item_attaches_the_recorded_lineage(rfi: Rfi):
    target = rfi.new_rfi()
    name = f"item-{uuid.uuid4().hex[:6]}.jpg"
    key = rfi.key(target, name)
    rfi.h.put(key, PHOTO)
    dying = rfi.flow(timeout_s=1.5, aps=crashing(rfi.client(), "attach_to_rfi"))
    with pytest.raises(SimulatedCrash):
        dying.handle_message("m", rfi.message(key))
    item_id = rfi.h.record_for(key)["item_id"]
    items, versions = rfi.count("aps.items"), rfi.count("aps.versions")
    assert resume(rfi, key).status == "attached"
    (att,) = rfi.attachments(target)
    assert att["urn"] == item_id
    assert (rfi.count("aps.items"), rfi.count("aps.versions")) == (items, versions)
    (item,) = rfi.items_named(target, name)
    assert len(item["versions"]) == 1


@pytest.mark.parametrize(
    ("endpoint", "entry"),
    [
        ("aps.items", {"status": 500, "after_work": True}),
        ("aps.versions", {"status": 502, "after_work": True}),
        ("aps.rfi.attach", {"status": 500, "after_work": True}),
        ("aps.rfi.attach", {"status": 504, "after_work": True}),
        ("aps.complete", {"status": 500, "after_work": True}),
        ("aps.complete", {"drop": True, "after_work": True}),
    ],
    ids=["item-500", "version-502", "attach-500", "attach-504", "complete-500", "complete-reset"],
)
def test_a_call_that_did_its_work_then_failed_is_adopted_never_done_twice(rfi: Rfi, endpoint, entry):
    flow = rfi.flow(sleep=lambda seconds: None)
    target = rfi.new_rfi()
    name = f"after-{uuid.uuid4().hex[:6]}.jpg"
    key = rfi.key(target, name)
    if endpoint == "aps.versions":
        rfi.h.put(key, b"first version")
        (first,) = flow.handle_message("m", rfi.message(key))
        assert first.status == "attached"
    rfi.h.put(key, PHOTO)
    before = {e: rfi.count(e) for e in ("aps.items", "aps.versions", "aps.rfi.attach")}
    rfi.h.fault(endpoint, fail_next=[entry])
    (outcome,) = flow.handle_message("m", rfi.message(key))
    assert outcome.status == "attached"
    (att,) = rfi.attachments(target)
    (item,) = rfi.items_named(target, name)
    assert item["versions"][-1]["sha256"] == sha256(PHOTO)
    assert len(item["versions"]) == (2 if endpoint == "aps.versions" else 1)
    assert {r["item_id"] for r in rfi.h.records() if r["key"] == key} == {att["urn"]}
    posts = {e: rfi.count(e) - n for e, n in before.items()}
    if endpoint == "aps.versions":  # a new version of the item the RFI already holds: no second attach
        assert posts == {"aps.items": 0, "aps.versions": 1, "aps.rfi.attach": 0}
    else:
        assert posts == {"aps.items": 1, "aps.versions": 0, "aps.rfi.attach": 1}  # each POST sent once


def test_a_crash_between_complete_and_its_record_makes_the_item_with_no_second_upload(rfi: Rfi):
    from relay.aws.transfers import TransferRecords

    class DyingRecords(TransferRecords):
        def update(self, upload: Any, **fields: Any) -> None:
            if fields.get("completed"):
                raise SimulatedCrash("killed after complete, before its record")
            super().update(upload, **fields)

    target = rfi.new_rfi()
    name = f"completed-{uuid.uuid4().hex[:6]}.jpg"
    key = rfi.key(target, name)
    rfi.h.put(key, PHOTO)
    dying = rfi.flow(timeout_s=1.5)
    dying.records = DyingRecords(dying.records.table, dying.records.client)
    completes = rfi.count("aps.complete")
    with pytest.raises(SimulatedCrash):
        dying.handle_message("m", rfi.message(key))
    record = rfi.h.record_for(key)
    assert (record["step"], "completed" in record) == ("created", False)
    assert rfi.count("aps.complete") - completes == 1  # it landed before the crash
    counts = {e: rfi.count(e) for e in ("aps.storage", "aps.s3part")}
    assert resume(rfi, key).status == "attached"
    assert {e: rfi.count(e) for e in counts} == counts  # no second storage object, no part sent again
    assert rfi.count("aps.complete") - completes == 2  # refused as spent; the item POST showed it had landed
    (item,) = rfi.items_named(target, name)
    assert [v["sha256"] for v in item["versions"]] == [sha256(PHOTO)]
    assert len(rfi.attachments(target)) == 1
    assert "completed" in rfi.h.record_for(key)


def test_a_spent_upload_key_never_completed_fails_with_the_complete_s_error(rfi: Rfi):
    target = rfi.new_rfi()
    key = rfi.key(target, f"spent-{uuid.uuid4().hex[:6]}.jpg")
    version = rfi.h.put(key, PHOTO)
    rfi.h.fault("aps.complete", fail_next=[{"status": 400, "code": "BAD_INPUT", "message": "uploadKey expired"}])
    (outcome,) = rfi.flow().handle_message("m", rfi.message(key))
    assert (outcome.status, outcome.error_code) == ("failed", "BAD_INPUT")
    record = rfi.h.record_for(key)
    assert record["error_step"] == "complete"
    assert rfi.h.tags(key, version)["relay-status"] == "failed"
    assert rfi.attachments(target) == []


def test_one_name_under_two_rfis_is_two_items_each_rfi_keeps_its_file(rfi: Rfi):
    first, second = rfi.new_rfi(), rfi.new_rfi()
    name = f"shared-{uuid.uuid4().hex[:6]}.jpg"
    rfi.h.put(rfi.key(first, name), b"first RFI's photo")
    rfi.h.put(rfi.key(second, name), b"second RFI's photo")
    rfi.deliver()
    for target, data in ((first, b"first RFI's photo"), (second, b"second RFI's photo")):
        (att,) = rfi.attachments(target)
        assert att["name"] == name
        assert [v["sha256"] for v in rfi.item(att["urn"])["versions"]] == [sha256(data)]


def test_a_lost_attach_answer_is_adopted_by_urn_never_attached_twice(rfi: Rfi):
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    target = rfi.new_rfi()
    key = rfi.key(target, f"lost-{uuid.uuid4().hex[:6]}.jpg")
    rfi.h.put(key, PHOTO)
    relay = rfi.flow({"RELAY_HTTP_READ_TIMEOUT": "0.5"}, sleep=lambda s: None)
    rfi.h.fault("aps.rfi.attach", fail_next=[{"latency_ms": 1000}])  # it lands; its answer comes too late
    attaches = rfi.count("aps.rfi.attach")
    with pytest.raises(RetryLaterError):  # not found yet by the listing: back to the queue, never resent blind
        relay.handle_message("m", rfi.message(key))
    time.sleep(0.8)
    (outcome,) = relay.handle_message("m", rfi.message(key))
    assert outcome.status == "attached"
    (att,) = rfi.attachments(target)
    assert outcome.attachment_id == att["id"]
    assert rfi.count("aps.rfi.attach") - attaches == 1
    assert rfi.h.record_for(key)["rfi_attachment_id"] == att["id"]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"status": 400, "code": "BAD_INPUT"}, "BAD_INPUT"),
        ({"status": 403, "code": "FORBIDDEN"}, "PermissionDenied"),
        ({"status": 404, "code": "NOT_FOUND"}, "RfiNotFound"),
    ],
)
def test_an_attach_failing_for_good_is_failed_and_the_dm_version_stays_named(rfi: Rfi, fault, code):
    target = rfi.new_rfi()
    key = rfi.key(target, f"refused-{uuid.uuid4().hex[:6]}.jpg")
    version = rfi.h.put(key, PHOTO)
    rfi.h.fault("aps.rfi.attach", fail_next=[fault])
    rfi.deliver()
    assert rfi.attachments(target) == []
    record = rfi.h.record_for(key)
    assert record["status"] == "failed"
    assert record["error_code"] == code
    assert record["error_step"] == "attach"
    item = rfi.item(record["item_id"])  # the DM version stays: DM keeps history
    assert item["versions"][0]["sha256"] == sha256(PHOTO)
    assert rfi.h.tags(key, version) == {
        "relay-status": "failed",
        "relay-error": code,
        "relay-dm-item": record["item_id"],
    }


def test_an_unknown_rfi_is_failed_naming_the_attach_step(rfi: Rfi):
    key = rfi.key("RFI-nowhere", "photo.jpg")
    rfi.h.put(key, PHOTO)
    rfi.deliver()
    record = rfi.h.record_for(key)
    assert (record["status"], record["error_code"], record["error_step"]) == ("failed", "RfiNotFound", "attach")


# -- Errors ---------------------------------------------------------------------------------------


def test_no_aps_login_is_retried_then_failed_with_aps_login_required(rfi: Rfi):
    from relay.flows.s3_to_itwin.flow import RetryLaterError

    secrets = rfi.h.stack.client("secretsmanager")
    secret_id = rfi.h.stack.env(FUNCTION)["RELAY_APS_SECRET_ID"]
    saved = secrets.get_secret_value(SecretId=secret_id)["SecretString"]
    signed_out = {k: v for k, v in json.loads(saved).items() if k not in ("access_token", "expires_at")}
    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps(signed_out))
    try:
        target = rfi.new_rfi()
        key = rfi.key(target, "login.jpg")
        version = rfi.h.put(key, PHOTO)
        storage = rfi.count("aps.storage")
        flow = rfi.flow()  # a new container: it reads the signed-out secret
        with pytest.raises(RetryLaterError) as info:
            flow.handle_message("m", rfi.message(key), receive_count=1)
        assert info.value.code == "ApsLoginRequired"
        assert rfi.h.record_for(key)["status"] == "retrying"
        with pytest.raises(RetryLaterError):  # the last delivery: tagged failed, and on to the DLQ
            flow.handle_message("m", rfi.message(key), receive_count=5)
        assert rfi.h.tags(key, version) == {"relay-status": "failed", "relay-error": "ApsLoginRequired"}
        assert rfi.h.record_for(key)["status"] == "failed"
        assert rfi.count("aps.storage") == storage
    finally:
        secrets.put_secret_value(SecretId=secret_id, SecretString=saved)


@pytest.mark.parametrize(
    ("endpoint", "status", "code", "step"),
    [
        ("aps.storage", 403, "PermissionDenied", "storage"),
        ("aps.items", 403, "PermissionDenied", "item"),
        ("aps.complete", 403, "PermissionDenied", "complete"),
        ("aps.project", 403, "PermissionDenied", "project"),
        ("aps.project", 404, "ProjectNotFound", "project"),
        ("aps.storage", 404, "StorageNotFound", "storage"),
    ],
)
def test_403_and_404_fail_naming_the_step(rfi: Rfi, endpoint, status, code, step):
    target = rfi.new_rfi()
    key = rfi.key(target, f"refused-{uuid.uuid4().hex[:6]}.jpg")
    version = rfi.h.put(key, PHOTO)
    # A fresh project id each time, so no warm container has its lookup cached.
    flow = rfi.flow()
    rfi.h.fault(endpoint, fail_next=[{"status": status, "code": "X"}])
    (outcome,) = flow.handle_message("m", rfi.message(key))
    assert outcome.status == "failed"
    assert outcome.error_code == code
    assert f"step {step}" in (outcome.message or "")
    record = rfi.h.record_for(key)
    assert record["error_step"] == step
    assert rfi.h.tags(key, version)["relay-error"] == code
    assert rfi.attachments(target) == []


def test_a_missing_folder_is_failed_naming_the_folder_step(rfi: Rfi):
    target = rfi.new_rfi()
    key = rfi.key(target, "folder.jpg")
    rfi.h.put(key, PHOTO)
    (outcome,) = rfi.flow({"RELAY_APS_FOLDER": "Plans"}).handle_message("m", rfi.message(key))
    assert (outcome.status, outcome.error_code) == ("failed", "FolderNotFound")


def test_a_project_without_an_rfi_container_is_not_bim_360(rfi: Rfi):
    rfi.h.admin("POST", "aps/projects", {"hub": "b.demo-hub", "project": "b.acc-project", "acc": True})
    key = "rfis/b.acc-project/RFI-1/photo.jpg"
    version = rfi.h.put(key, PHOTO)
    storage = rfi.count("aps.storage")
    rfi.deliver()
    assert rfi.h.tags(key, version) == {"relay-status": "failed", "relay-error": "NotBim360Project"}
    assert rfi.count("aps.storage") == storage


@pytest.mark.parametrize(
    ("endpoint", "fault"),
    [
        ("aps.storage", {"status": 429, "retry_after": 1}),
        ("aps.s3part", {"status": 503}),
        ("aps.complete", {"status": 500}),
        ("aps.items", {"status": 503}),
        ("aps.rfi.attach", {"status": 500}),
    ],
)
def test_429_and_5xx_are_retried_honouring_retry_after(rfi: Rfi, endpoint, fault):
    waits: list[float] = []
    flow = rfi.flow(sleep=waits.append)
    target = rfi.new_rfi()
    name = f"transient-{uuid.uuid4().hex[:6]}.jpg"
    key = rfi.key(target, name)
    rfi.h.put(key, PHOTO)
    rfi.h.fault(endpoint, fail_next=[fault])
    (outcome,) = flow.handle_message("m", rfi.message(key))
    assert outcome.status == "attached"
    assert len(rfi.attachments(target)) == 1
    (item,) = rfi.items_named(target, name)
    assert len(item["versions"]) == 1
    assert waits
    if fault.get("retry_after"):
        assert waits[0] >= 1


def test_a_persistent_outage_ends_in_the_dlq_visibly_failed(rfi: Rfi):
    target = rfi.new_rfi()
    key = rfi.key(target, "outage.jpg")
    version = rfi.h.put(key, PHOTO)
    rfi.h.fault("aps.storage", error_rate=1.0, error_status=503)
    report = rfi.deliver(max_seconds=120)
    assert report.invocations == 5
    assert rfi.h.queue_depth("RfiUploadDeadLetterQueue") == 1
    assert rfi.h.tags(key, version)["relay-status"] == "failed"
    assert rfi.h.record_for(key)["status"] == "failed"


@pytest.mark.parametrize(("body", "code"), [(b"", "EmptyFile"), (b"x" * 2048, "RequestTooLarge")])
def test_empty_or_too_large_is_rejected_before_any_vendor_call(rfi: Rfi, body, code):
    target = rfi.new_rfi()
    key = rfi.key(target, f"limit-{uuid.uuid4().hex[:6]}.bin")
    version = rfi.h.put(key, body)
    calls = sum(v for k, v in rfi.h.counts().items() if k.startswith("aps."))
    (outcome,) = rfi.flow({"RELAY_APS_MAX_UPLOAD_BYTES": "1024"}).handle_message("m", rfi.message(key))
    assert (outcome.status, outcome.error_code) == ("rejected", code)
    assert sum(v for k, v in rfi.h.counts().items() if k.startswith("aps.")) == calls
    assert rfi.h.tags(key, version) == {"relay-status": "rejected", "relay-error": code}


def test_a_name_over_400_characters_is_rejected_before_any_vendor_call(rfi: Rfi):
    from relay.errors import InvalidUploadError
    from relay.flows.s3_to_rfi.targets import parse_target

    with pytest.raises(InvalidUploadError) as info:
        parse_target(f"rfis/{PROJECT}/RFI-1/{'n' * 401}.jpg")
    assert info.value.code == "KeySegmentTooLong"


def test_expired_part_urls_are_asked_again_with_the_same_upload_key(rfi: Rfi):
    target = rfi.new_rfi()
    key = rfi.key(target, f"expired-{uuid.uuid4().hex[:6]}.jpg")
    rfi.h.put(key, PHOTO)
    signs = rfi.count("aps.signeds3upload")
    rfi.h.fault("aps.s3part", fail_next=[{"status": 403, "code": "AccessDenied", "message": "Request has expired"}])
    (outcome,) = rfi.flow().handle_message("m", rfi.message(key))
    assert outcome.status == "attached"
    assert rfi.count("aps.signeds3upload") - signs == 2
    (att,) = rfi.attachments(target)
    assert rfi.item(att["urn"])["versions"][0]["sha256"] == sha256(PHOTO)


def test_part_puts_carry_no_authorization_header(rfi: Rfi):
    """The sandbox refuses a part PUT that carries one (400 InvalidArgument): an attached upload sent none."""
    target = rfi.new_rfi()
    key = rfi.key(target, "noauth.jpg")
    rfi.h.put(key, PHOTO)
    (outcome,) = rfi.flow().handle_message("m", rfi.message(key))
    assert outcome.status == "attached"


# -- The burst ------------------------------------------------------------------------------------


def test_a_burst_of_100_uploads_with_duplicates_and_faults_makes_exactly_100_attachments(rfi: Rfi):
    h = rfi.h
    target = rfi.new_rfi()
    rng = random.Random(100)
    files = {f"burst-{n:03d}-{uuid.uuid4().hex[:4]}.jpg": rng.randbytes(rng.randint(1, 4096)) for n in range(100)}
    for name, data in files.items():
        h.put(rfi.key(target, name), data)
    sqs = h.stack.client("sqs")
    for name in rng.sample(sorted(files), 20):  # 20% delivered twice
        sqs.send_message(QueueUrl=h.stack.resources["RfiUploadQueue"], MessageBody=rfi.message(rfi.key(target, name)))
    for endpoint in ("aps.storage", "aps.s3part", "aps.complete", "aps.items", "aps.rfi.attach"):
        h.fault(endpoint, error_rate=0.1, error_status=rng.choice([429, 500, 503]))
    report = rfi.deliver(max_seconds=280)
    h.admin("DELETE", "faults")
    rfi.deliver()
    atts = rfi.attachments(target)
    assert len(atts) == 100, report
    assert len({a["urn"] for a in atts}) == 100
    named = {f"{target} {name}": name for name in files}
    items = {named[i["name"]]: i for i in h.inspect()["aps"]["items"].values() if i["name"] in named}
    assert len(items) == 100
    for name, item in items.items():
        assert [v["sha256"] for v in item["versions"]] == [sha256(files[name])]  # no duplicate versions
    assert h.queue_depth("RfiUploadDeadLetterQueue") == 0


def test_the_sample_event_runs_through_the_docker_free_invoke(rfi: Rfi):
    from devstack.invoke import invoke
    from devstack.notifications import localize_event
    from relay.aws.s3events import parse_message
    from tests.conftest import EVENTS, load_event

    event = load_event("s3-put-rfi-photo.json")
    (upload,) = parse_message(event["Records"][0]["body"]).uploads
    assert upload.key == "rfis/b.demo-project/RFI-1/Site photo – level 2.jpg"
    data = (EVENTS / "objects" / "photo.jpg").read_bytes()
    rfi.h.s3.put_object(Bucket=upload.bucket, Key=upload.key, Body=data)
    rfi.h.empty_queue("RfiUploadQueue")
    event, _ = localize_event(rfi.h.s3, event)
    assert invoke(rfi.h.stack, FUNCTION, event) == {"batchItemFailures": []}
    (local,) = parse_message(event["Records"][0]["body"]).uploads
    tags = rfi.h.tags(upload.key, local.version_id)
    assert tags["relay-status"] == "attached"
    att = next(a for a in rfi.attachments("RFI-1") if a["id"] == tags["relay-attachment-id"])
    assert rfi.item(att["urn"])["versions"][-1]["sha256"] == sha256(data)
