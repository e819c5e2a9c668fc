"""The S3 → RFI flow's decisions, with a fake APS client and moto in-process laid out from template.yaml."""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Callable, Collection
from typing import IO, Any

import pytest

from relay import errors as e
from relay.aws.s3objects import ObjectStore
from relay.aws.transfers import TransferRecords
from relay.flows.s3_to_itwin.flow import RetryLaterError
from relay.flows.s3_to_rfi import S3ToRfiFlow
from relay.flows.s3_to_rfi.flow import step_error
from relay.flows.s3_to_rfi.targets import parse_target
from relay.settings import Settings
from relay.transport.requestor import Requestor
from relay.transport.retry import Deadline
from relay.vendors.aps import MAX_URLS_PER_CALL, ApsClient, FolderItem, StorageObject, part_count

BASE = "https://developer.api.autodesk.com"
FOLDER = "urn:adsk.wipprod:fs.folder:co.project-files"


class FakeAps(ApsClient):
    """APS as the flow sees it: DM items and RFI attachments in memory, faults scripted per operation."""

    def __init__(self, container: str | None = "container-1") -> None:
        super().__init__(Requestor(BASE, tokens=None, sleep=lambda seconds: None))
        self.container = container
        self.calls: Counter[str] = Counter()
        self.faults: dict[str, list[BaseException | None]] = {}  # None: that call goes through
        self.items: dict[str, dict[str, Any]] = {}  # lineage -> {name, versions: [object ids]}
        self.attachments: list[dict[str, Any]] = []
        self.parts: dict[str, set[int]] = {}
        self.completed: dict[str, int] = {}  # storage object id -> the size its completed upload stored
        self.sizes: dict[str, int] = {}  # storage object id -> the size its parts add up to
        self.lost_answer: set[str] = set()  # operations that land, then lose their answer
        self.after_work: dict[str, BaseException] = {}  # operations that land, then answer this error once
        self.deadline: Deadline | None = None

    def _op(self, name: str) -> None:
        self.calls[name] += 1
        queued = self.faults.get(name)
        if queued:
            fault = queued.pop(0)
            if fault is not None:
                raise fault

    def _after(self, name: str) -> None:
        if name in self.lost_answer:
            self.lost_answer.discard(name)
            raise e.VendorConnectionError("reset", code="ConnectionError")
        if name in self.after_work:
            raise self.after_work.pop(name)

    def use_deadline(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def rfi_container_id(self, hub_id: str, project_id: str) -> str:
        self._op("project")
        if self.container is None:
            raise e.VendorError("no container", code="NoRfiContainer")
        return self.container

    def top_folders(self, hub_id: str, project_id: str) -> list[dict[str, Any]]:
        self._op("folders")
        return [{"id": FOLDER, "attributes": {"name": "Project Files", "displayName": "Project Files"}}]

    def create_storage(self, project_id: str, folder_id: str, name: str) -> StorageObject:
        self._op("storage")
        return StorageObject.parse(f"urn:adsk.objects:os.object:wip.dm.prod/obj-{self.calls['storage']}")

    def upload_parts(
        self,
        obj: StorageObject,
        size: int,
        part_size: int,
        open_range: Callable[[int, int], IO[bytes]],
        *,
        upload_key: str | None = None,
        done: Collection[int] = (),
        concurrency: int = 4,
        on_part: Callable[[str, int], None] | None = None,
    ) -> str:
        self._op("upload")
        self.sizes[obj.object_id] = size
        key = upload_key or f"key-{obj.object_key}"
        for n in range(1, part_count(size, part_size) + 1):
            if n in done:
                continue
            self._op("part")
            start = (n - 1) * part_size
            assert open_range(start, min(part_size, size - start)).read()
            self.parts.setdefault(key, set()).add(n)
            if on_part:
                on_part(key, n)
        return key

    def complete_upload(self, obj: StorageObject, upload_key: str) -> dict[str, Any]:
        self._op("complete")
        if obj.object_id in self.completed:
            raise e.InvalidRequestError("uploadKey is spent", http_status=400, code="BAD_INPUT")
        self.completed[obj.object_id] = self.sizes.get(obj.object_id, 0)
        self._after("complete")
        return {"objectId": obj.object_id}

    def item_versions(self, project_id: str, item_id: str) -> Any:
        self._op("versions")
        item = self.items[item_id]
        for n, storage in reversed(list(enumerate(item["versions"], start=1))):
            yield f"{item_id}?version={n}", storage

    def _completed(self, obj: StorageObject) -> None:
        if obj.object_id not in self.completed:
            raise e.InvalidRequestError("the storage object was never completed", http_status=400, code="BAD_INPUT")

    def folder_items(self, project_id: str, folder_id: str) -> Any:
        self._op("contents")
        for item_id, item in self.items.items():
            n = len(item["versions"])
            yield FolderItem(item_id, item["name"], f"{item_id}?version={n}", item["versions"][-1])

    def create_item(self, project_id: str, folder_id: str, name: str, obj: StorageObject) -> tuple[str, str | None]:
        self._op("item")
        self._completed(obj)
        if any(i["name"] == name for i in self.items.values()):
            raise e.InvalidRequestError("exists", http_status=409, code="CONFLICT")
        item_id = f"urn:adsk.wipprod:dm.lineage:{len(self.items) + 1}"
        self.items[item_id] = {"name": name, "versions": [obj.object_id]}
        if "item" in self.lost_answer:
            self.lost_answer.discard("item")
            raise e.VendorConnectionError("reset", code="ConnectionError")
        self._after("item")
        return item_id, f"{item_id}?version=1"

    def create_version(self, project_id: str, item_id: str, name: str, obj: StorageObject) -> str:
        self._op("version")
        self._completed(obj)
        self.items[item_id]["versions"].append(obj.object_id)
        self._after("version")
        return f"{item_id}?version={len(self.items[item_id]['versions'])}"

    def attach_to_rfi(self, container_id: str, rfi_id: str, name: str, item_urn: str) -> dict[str, Any]:
        self._op("attach")
        att = {"id": f"att-{len(self.attachments) + 1}", "name": name, "urn": item_urn, "rfiId": rfi_id}
        self.attachments.append(att)
        if "attach" in self.lost_answer:
            self.lost_answer.discard("attach")
            raise e.VendorConnectionError("timed out", code="Timeout")
        self._after("attach")
        return att

    def list_rfi_attachments(self, container_id: str, rfi_id: str) -> Any:
        self._op("list")
        yield from list(self.attachments)


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "aps_hub_id": "b.hub",
        "transfers_table": "TransfersTable",
        "idempotency_table": "IdempotencyTable",
        "max_receive_count": 3,
        "aps_part_bytes": 4,
        "aps_max_upload_bytes": 1000,
    }
    return Settings(**{**base, **overrides})


@pytest.fixture
def make(aws: Any) -> Callable[..., tuple[S3ToRfiFlow, FakeAps]]:
    def build(aps: FakeAps | None = None, **overrides: Any) -> tuple[S3ToRfiFlow, FakeAps]:
        aps = aps or FakeAps()
        flow = S3ToRfiFlow(
            settings=settings(**overrides),
            objects=ObjectStore(aws.s3),
            aps=aps,
            records=TransferRecords("TransfersTable", aws.dynamodb),
            persistence=None,
        )
        return flow, aps

    return build


def message(aws: Any, key: str, body: bytes, **metadata: str) -> str:
    import json
    from urllib.parse import quote_plus

    fields = aws.put(key, body, **metadata)
    obj = {"key": quote_plus(key, safe="/"), **fields}
    return json.dumps(
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "uploads"}, "object": obj}}]}
    )


KEY = "rfis/b.project/RFI-1/photo.jpg"


def test_an_upload_becomes_one_version_and_one_attachment(aws, make):
    flow, aps = make()
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"0123456789", caption="Crack"))
    assert outcome.status == "attached"
    assert outcome.attachment_id == "att-1"
    assert aps.calls["part"] == 3  # 10 bytes in 4-byte parts
    assert aps.attachments[0]["urn"] == "urn:adsk.wipprod:dm.lineage:1"
    tags = aws.tags(KEY)
    assert tags == {
        "relay-status": "attached",
        "relay-attachment-id": "att-1",
        "relay-dm-item": aps.attachments[0]["urn"],
    }
    (record,) = [aws.record(i["upload"]["S"]) for i in aws.dynamodb.scan(TableName="TransfersTable")["Items"]]
    assert record["parts_done"] == "1,2,3"
    assert record["caption"] == "Crack"
    assert record["version_id"].endswith("?version=1")


def test_the_project_lookup_is_cached_per_warm_container(aws, make):
    flow, aps = make()
    flow.handle_message("m", message(aws, KEY, b"one"))
    flow.handle_message("m", message(aws, "rfis/b.project/RFI-1/two.jpg", b"two"))
    assert (aps.calls["project"], aps.calls["folders"]) == (1, 1)


def test_a_folder_id_setting_needs_no_top_folder_lookup(aws, make):
    flow, aps = make(aps_folder=FOLDER)
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"abc"))
    assert outcome.status == "attached"
    assert aps.calls["folders"] == 0


def test_a_project_without_an_rfi_container_fails_as_not_bim_360(aws, make):
    flow, aps = make(FakeAps(container=None))
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"abc"))
    assert (outcome.status, outcome.error_code) == ("failed", "NotBim360Project")
    assert aps.calls["storage"] == 0


@pytest.mark.parametrize(("body", "code"), [(b"", "EmptyFile"), (b"x" * 1001, "RequestTooLarge")])
def test_empty_or_too_large_is_rejected_before_any_vendor_call(aws, make, body, code):
    flow, aps = make()
    (outcome,) = flow.handle_message("m", message(aws, KEY, body))
    assert (outcome.status, outcome.error_code) == ("rejected", code)
    assert sum(aps.calls.values()) == 0


def test_an_existing_name_gets_a_new_version_attached_once(aws, make):
    flow, aps = make()
    flow.handle_message("m", message(aws, KEY, b"v1"))
    flow.handle_message("m", message(aws, KEY, b"v2"))
    (item,) = aps.items.values()
    assert len(item["versions"]) == 2
    assert len(aps.attachments) == 1
    assert aps.calls["attach"] == 1


def test_a_lost_item_answer_is_adopted_by_its_storage_object(aws, make):
    aps = FakeAps()
    aps.lost_answer.add("item")
    flow, _ = make(aps)
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"abc"))
    assert outcome.status == "attached"
    (item,) = aps.items.values()
    assert len(item["versions"]) == 1
    assert aps.calls["version"] == 0


def test_a_lost_attach_answer_is_adopted_by_urn(aws, make):
    aps = FakeAps()
    aps.lost_answer.add("attach")
    flow, _ = make(aps)
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"abc"))
    assert outcome.status == "attached"
    assert outcome.attachment_id == "att-1"
    assert len(aps.attachments) == 1


def server_error(status: int = 500) -> e.ServerError:
    return e.ServerError("internal error", http_status=status)


@pytest.mark.parametrize("step", ["item", "version", "attach"])
def test_a_500_after_the_work_is_adopted_never_posted_twice(aws, make, step):
    flow, aps = make()
    if step == "version":
        flow.handle_message("m", message(aws, KEY, b"v1"))
    aps.after_work[step] = server_error()
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"v2"))
    assert outcome.status == "attached"
    (item,) = aps.items.values()
    assert len(item["versions"]) == (2 if step == "version" else 1)
    assert len(aps.attachments) == 1
    assert aps.calls[step] == 1


def test_a_500_that_did_nothing_is_sent_again_after_the_listing_finds_nothing(aws, make):
    aps = FakeAps()
    aps.faults["attach"] = [server_error(502)]
    flow, _ = make(aps)
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"abc"))
    assert outcome.status == "attached"
    assert (aps.calls["attach"], len(aps.attachments)) == (2, 1)


def test_a_lost_attach_answer_with_nothing_listed_goes_back_to_the_queue_not_attached_blind(aws, make):
    aps = FakeAps()
    aps.faults["attach"] = [e.VendorConnectionError("timed out", code="Timeout")]  # nothing landed (yet)
    flow, _ = make(aps)
    body = message(aws, KEY, b"abc")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    assert aps.calls["attach"] == 1
    (outcome,) = flow.handle_message("m", body)
    assert outcome.status == "attached"
    assert len(aps.attachments) == 1


def test_a_complete_whose_answer_was_lost_is_settled_by_the_item_post(aws, make):
    aps = FakeAps()
    aps.lost_answer.add("complete")
    flow, _ = make(aps)
    body = message(aws, KEY, b"0123456789")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    parts = aps.calls["part"]
    (outcome,) = flow.handle_message("m", body)
    assert outcome.status == "attached"
    assert (aps.calls["complete"], aps.calls["item"], aps.calls["part"]) == (2, 1, parts)


def test_a_spent_upload_key_never_completed_fails_naming_the_complete_step(aws, make):
    aps = FakeAps()
    aps.faults["complete"] = [e.InvalidRequestError("uploadKey expired", http_status=400, code="BAD_INPUT")]
    flow, _ = make(aps)
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"abc"))
    assert (outcome.status, outcome.error_code) == ("failed", "BAD_INPUT")
    assert "uploadKey expired" in (outcome.message or "")
    (item,) = aws.dynamodb.scan(TableName="TransfersTable")["Items"]
    assert aws.record(item["upload"]["S"])["error_step"] == "complete"


@pytest.mark.parametrize("step", ["item", "version"])
def test_a_lost_item_or_version_answer_with_nothing_listed_goes_back_to_the_queue(aws, make, step):
    flow, aps = make()
    if step == "version":
        flow.handle_message("m", message(aws, KEY, b"v1"))
    aps.faults[step] = [e.VendorConnectionError("timed out", code="Timeout")]  # nothing landed (yet)
    body = message(aws, KEY, b"v2")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    assert aps.calls[step] == 1  # never POSTed again in the same invocation
    (outcome,) = flow.handle_message("m", body)
    assert outcome.status == "attached"
    (item,) = aps.items.values()
    assert len(item["versions"]) == (2 if step == "version" else 1)


def test_a_version_made_before_someone_else_s_is_adopted_from_the_item_versions(aws, make):
    flow, aps = make()
    flow.handle_message("m", message(aws, KEY, b"v1"))
    other = StorageObject.parse("urn:adsk.objects:os.object:wip.dm.prod/someone-else")

    real = aps.create_version

    def lands_then_another_version(project_id: str, item_id: str, name: str, obj: StorageObject) -> str:
        real(project_id, item_id, name, obj)
        aps.items[item_id]["versions"].append(other.object_id)  # someone versions the item meanwhile
        raise e.VendorConnectionError("answer lost", code="Timeout")

    aps.create_version = lands_then_another_version  # type: ignore[method-assign]
    (outcome,) = flow.handle_message("m", message(aws, KEY, b"v2"))
    assert outcome.status == "attached"
    (item,) = aps.items.values()
    # v1, this upload's (adopted though no longer the tip), and the other one: no second version of ours
    assert item["versions"] == [f"urn:adsk.objects:os.object:wip.dm.prod/obj-{n}" for n in (1, 2)] + [other.object_id]


def test_409_every_round_goes_back_to_the_queue_not_failed(aws, make):
    aps = FakeAps()
    conflict = e.InvalidRequestError("exists", http_status=409, code="CONFLICT")
    aps.faults["item"] = [conflict, conflict, conflict]
    flow, _ = make(aps)
    body = message(aws, KEY, b"abc")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    (outcome,) = flow.handle_message("m", body)
    assert outcome.status == "attached"


def test_a_500_on_the_attach_past_the_deadline_is_posted_once(aws, make):
    aps = FakeAps()
    aps.faults["attach"] = [server_error()] * 5
    flow, _ = make(aps)
    aps.requestor.use_deadline(Deadline(lambda: 1000))  # 1 s left: no wait fits beside the margin
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", message(aws, KEY, b"abc"))
    assert (aps.calls["attach"], len(aps.attachments)) == (1, 0)


def test_one_name_under_two_rfis_is_two_items(aws, make):
    flow, aps = make()
    flow.handle_message("m", message(aws, KEY, b"first"))
    flow.handle_message("m", message(aws, KEY.replace("RFI-1", "RFI-2"), b"second"))
    assert sorted(i["name"] for i in aps.items.values()) == ["RFI-1 photo.jpg", "RFI-2 photo.jpg"]
    assert all(len(i["versions"]) == 1 for i in aps.items.values())
    assert sorted(a["name"] for a in aps.attachments) == ["photo.jpg", "photo.jpg"]
    assert len({a["urn"] for a in aps.attachments}) == 2


def test_a_retry_resumes_from_the_recorded_parts(aws, make):
    aps = FakeAps()
    aps.faults["part"] = [None, e.ServerError("down", http_status=503)]  # part 2 fails for this delivery
    flow, _ = make(aps)
    body = message(aws, KEY, b"0123456789")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    (outcome,) = flow.handle_message("m", body)
    assert outcome.status == "attached"
    assert aps.calls["storage"] == 1  # the recorded storage object is reused
    assert aps.calls["part"] == 2 + 2  # 1, then 2 (failed); then only 2 and 3
    assert aps.parts == {"key-obj-1": {1, 2, 3}}


def test_a_retry_after_complete_does_not_upload_again(aws, make):
    aps = FakeAps()
    aps.faults["contents"] = [e.ServerError("down", http_status=503)]
    flow, _ = make(aps)
    body = message(aws, KEY, b"0123456789")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    parts = aps.calls["part"]
    (outcome,) = flow.handle_message("m", body)
    assert outcome.status == "attached"
    assert (aps.calls["part"], aps.calls["complete"], aps.calls["storage"]) == (parts, 1, 1)


def test_a_retry_after_the_item_attaches_the_recorded_lineage(aws, make):
    aps = FakeAps()
    aps.faults["list"] = [e.ServerError("down", http_status=503)]
    flow, _ = make(aps)
    body = message(aws, KEY, b"abc")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    (outcome,) = flow.handle_message("m", body)
    assert outcome.status == "attached"
    assert (aps.calls["item"], aps.calls["version"]) == (1, 0)


def test_the_last_delivery_of_a_retried_error_is_tagged_failed(aws, make):
    aps = FakeAps()
    aps.faults["storage"] = [e.ApsLoginRequiredError("signed out")] * 3
    flow, _ = make(aps)
    body = message(aws, KEY, b"abc")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body, receive_count=1)
    assert "relay-status" not in aws.tags(KEY)
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body, receive_count=3)
    assert aws.tags(KEY) == {"relay-status": "failed", "relay-error": "ApsLoginRequired"}


@pytest.mark.parametrize(
    ("error", "step", "code", "outcome"),
    [
        (e.PermissionDeniedError("no", http_status=403), "storage", "PermissionDenied", e.Outcome.FAILED),
        (e.NotFoundError("no", http_status=404), "project", "ProjectNotFound", e.Outcome.FAILED),
        (e.NotFoundError("no", http_status=404), "attach", "RfiNotFound", e.Outcome.FAILED),
        (e.InvalidRequestError("no", http_status=400, code="BAD_INPUT"), "attach", "BAD_INPUT", e.Outcome.FAILED),
        (e.AuthenticationError("no", http_status=401), "item", "ApsLoginRequired", e.Outcome.RETRY),
        (e.RateLimitedError("slow", http_status=429), "storage", "RateLimited", e.Outcome.RETRY),
        (e.ServerError("down", http_status=503), "complete", "ServerError", e.Outcome.RETRY),
        (e.TooLargeError("big", http_status=413), "upload", "RequestTooLarge", e.Outcome.REJECTED),
    ],
)
def test_step_errors_name_the_step_and_keep_their_outcome(error, step, code, outcome):
    mapped = step_error(step, error)
    assert mapped.code == code
    assert mapped.outcome is outcome
    if isinstance(mapped, e.StepFailedError):
        assert mapped.step == step
        assert f"step {step}" in str(mapped)


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("issues/I-1/photo.jpg", "UnknownPrefix"),
        ("rfis//RFI-1/photo.jpg", "EmptyKeySegment"),
        ("rfis/b.p//photo.jpg", "EmptyKeySegment"),
        ("rfis/b.p/RFI-1/a/b.jpg", "NestedKey"),
        ("rfis/b.p/RFI-1/" + "n" * 401, "KeySegmentTooLong"),
    ],
)
def test_bad_keys_are_refused_with_a_named_code(key, code):
    with pytest.raises(e.InvalidUploadError) as info:
        parse_target(key)
    assert info.value.code == code


def test_a_400_character_name_is_accepted():
    assert parse_target("rfis/b.p/RFI-1/" + "n" * 400).file_name == "n" * 400


# -- the client's signed upload: windows of 25 URLs, bounded parallel PUTs, re-signing on 403 -------------


class SignedUploads(ApsClient):
    """signeds3upload and part PUTs scripted; everything else is the real client."""

    def __init__(self, refuse: dict[int, int] | None = None) -> None:
        super().__init__(Requestor(BASE, tokens=None, sleep=lambda seconds: None))
        self.asked: list[tuple[int, int, str | None]] = []
        self.refuse = dict(refuse or {})  # part -> how many PUTs of it answer 403
        self.put: Counter[int] = Counter()
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.part_uploader.request = self._put  # type: ignore[method-assign,assignment]

    def signed_urls(
        self, obj: StorageObject, parts: int, first_part: int, upload_key: str | None
    ) -> tuple[str, list[str]]:
        assert parts <= MAX_URLS_PER_CALL
        self.asked.append((first_part, parts, upload_key))
        return "KEY", [f"https://s3.example/{n}" for n in range(first_part, first_part + parts)]

    def _put(self, method: str, url: str, **kwargs: Any) -> Any:
        import time

        number = int(url.rsplit("/", 1)[1])
        assert kwargs["auth"] is False
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(0.002)
            if self.refuse.get(number):
                self.refuse[number] -= 1
                raise e.PermissionDeniedError("expired", http_status=403)
            kwargs["body"]().read()
            with self.lock:
                self.put[number] += 1
        finally:
            with self.lock:
                self.in_flight -= 1


OBJ = StorageObject.parse("urn:adsk.objects:os.object:wip.dm.prod/x.bin")


def ranged(size: int) -> Callable[[int, int], IO[bytes]]:
    return lambda start, length: io.BytesIO(b"x" * length)


def test_urls_are_asked_25_at_a_time_and_parts_run_in_bounded_parallel():
    client = SignedUploads()
    done: list[int] = []
    key = client.upload_parts(OBJ, 60, 1, ranged(60), concurrency=4, on_part=lambda k, n: done.append(n))
    assert key == "KEY"
    assert [(f, p) for f, p, _ in client.asked] == [(1, 25), (26, 25), (51, 10)]
    assert sorted(done) == list(range(1, 61))
    assert 1 < client.peak <= 4


def test_a_403_asks_again_with_the_same_upload_key_and_resends_only_the_missing_parts():
    client = SignedUploads(refuse={3: 1})
    client.upload_parts(OBJ, 5, 1, ranged(5), concurrency=2)
    assert client.asked == [(1, 5, None), (3, 1, "KEY")]
    assert all(client.put[n] == 1 for n in range(1, 6))


def test_recorded_parts_are_not_sent_again():
    client = SignedUploads()
    client.upload_parts(OBJ, 5, 1, ranged(5), upload_key="KEY", done={1, 2, 4}, concurrency=2)
    assert set(client.put) == {3, 5}
    assert client.asked == [(3, 3, "KEY")]


def test_a_403_with_fresh_urls_too_is_permission_denied():
    client = SignedUploads(refuse={1: 5})
    with pytest.raises(e.PermissionDeniedError):
        client.upload_parts(OBJ, 2, 1, ranged(2))


def test_one_part_still_asks_for_one_url():
    client = SignedUploads()
    client.upload_parts(OBJ, 3, 10, ranged(3))
    assert client.asked == [(1, 1, None)]
    assert part_count(0, 5) == 1


def test_the_400_character_limit_counts_the_name_as_sent_after_normalisation():
    decomposed = "\u0958" * 200  # 200 characters as uploaded; NFC makes each one two (U+0915 U+093C)
    with pytest.raises(e.InvalidUploadError) as refused:
        parse_target("rfis/b.p/RFI-1/" + decomposed + ".jpg")
    assert "400" in str(refused.value)


def test_a_resume_cuts_the_missing_parts_with_the_recorded_part_size(aws, make):
    """A redeploy that changes RELAY_APS_PART_BYTES between the crash and the retry must not shift the parts."""
    sizes: list[int] = []

    class Recording(FakeAps):
        def upload_parts(self, obj: StorageObject, size: int, part_size: int, *args: Any, **kw: Any) -> str:
            sizes.append(part_size)
            return super().upload_parts(obj, size, part_size, *args, **kw)

    aps = Recording()
    aps.faults["part"] = [None, e.ServerError("down", http_status=503)]
    flow, _ = make(aps)  # 4-byte parts
    body = message(aws, KEY, b"0123456789")
    with pytest.raises(RetryLaterError):
        flow.handle_message("m", body)
    redeployed, _ = make(aps, aps_part_bytes=3)
    (outcome,) = redeployed.handle_message("m", body)
    assert outcome.status == "attached"
    assert sizes == [4, 4]  # the parts already sent were 4 bytes: the rest are cut the same way
    assert aps.parts == {"key-obj-1": {1, 2, 3}}


def test_a_missing_hub_stops_the_function_at_its_cold_start():
    from relay.flows.s3_to_rfi import build_s3_to_rfi

    with pytest.raises(e.ConfigurationError, match="RELAY_APS_HUB_ID"):
        build_s3_to_rfi(settings(aps_hub_id=""))
