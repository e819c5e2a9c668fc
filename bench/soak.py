"""Issue 11, part 1: the soak. Uploads across every flow under the production fault mix, driven through the local
stack until its queues and dead-letter queues settle, then checked upload by upload.

The flows: S3 → iTwin issues and forms, S3 → BIM 360 RFIs, and webhook-triggered archives (an attachment made in
iTwin, a signed `attachmentAttached` delivery to the receiver, the archive worker's copy into S3). Sizes are
log-uniform between the smallest and the largest (1 KiB..8 MiB here); some names are Unicode.

Faults, as shares of the vendor calls (iTwin and APS endpoints, the signed part URLs included):
- dropped connections 5%, 429 with `retry-after: 1` 10%, 5xx (500/502/503/504 by endpoint) 10%;
- duplicate notifications for 20% of the uploads: half sent while the original is in flight, so two workers take
  them at once (the next batch of the same queue, or the second RFI worker), half sent after everything settled
  (a webhook's duplicate is a second signed delivery: concurrent ones from two receivers, later ones under a new
  messageId);
- crashes for 2%: the runtime dies (a BaseException) in the middle of the transfer, after the vendor's metadata
  (iTwin) or storage object (APS) was created; the pump brings the batch back after the invocation's timeout
  (20 s here, instead of the template's 120 and 900, so a resume does not wait a quarter of an hour). They are
  drawn from the S3 flows' uploads: an archive has no create.

It exits non-zero unless, for every upload: exactly 1 attachment (or archived copy), its sha256 matches, no orphan
metadata (an attachment without its file, a DM item attached nowhere, a copy nobody asked for), none lost
(neither attached nor visibly failed or rejected), and the record agrees with the tags.
moto server and the sandbox run as processes of their own (bench/common.py); the functions run in this one.
Usage: python bench/soak.py [--uploads 1000] [--seed 11] [--min-size 1024] [--max-size 8388608]
tests/integration/test_soak.py runs `run_soak` with 200 small uploads against the test session's stack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import threading
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import requests

from bench.common import MiB, local_env, provisioned_stack

S3_ITWIN, S3_RFI, ARCHIVE, WEBHOOKS = "S3ToItwinFunction", "S3ToRfiFunction", "ArchiveFunction", "ItwinWebhooksFunction"
HUB, PROJECT = "b.demo-hub", "b.demo-project"
QUEUES = {
    S3_ITWIN: ("UploadQueue", "UploadDeadLetterQueue"),
    S3_RFI: ("RfiUploadQueue", "RfiUploadDeadLetterQueue"),
    ARCHIVE: ("ArchiveQueue", "ArchiveDeadLetterQueue"),
}
# Share of the uploads per flow; the archives' attachments are made in iTwin before the faults start.
MIX = (("issues", 0.3), ("forms", 0.2), ("rfis", 0.25), ("archive", 0.25))
DROP, THROTTLE, ERROR = 0.05, 0.10, 0.10  # shares of the vendor calls
DUPLICATES, CRASHES = 0.20, 0.02  # shares of the uploads
VENDOR_ENDPOINTS = (
    *(f"itwin.{kind}.{op}" for kind in ("issues", "forms") for op in ("create", "upload", "list", "download")),
    *("aps.project", "aps.topFolders", "aps.storage", "aps.signeds3upload", "aps.s3part", "aps.complete"),
    *("aps.items", "aps.versions", "aps.rfi.attach", "aps.rfi.list"),
)
# Names: plain, accented, other scripts, and a dash; NFC, as a user's device would usually send them.
UNICODE_STEMS = ("Fissure – baie", "Überprüfung Südflügel", "Ωμέγα σκυρόδεμα", "現場写真 北壁", "Réception façade")


class SimulatedCrash(BaseException):
    """The runtime killing the function mid-transfer: not an Exception, so nothing in the flow cleans up."""


@dataclass
class Planned:
    """One upload of the soak, and what became of it."""

    n: int
    flow: str  # issues | forms | rfis | archive
    parent: str
    name: str
    size: int
    sha256: str
    caption: str | None
    duplicate: str | None  # None | "concurrent" | "later"
    crash: bool
    key: str = ""  # the S3 key (S3 flows) or the archive prefix (archives)
    version_id: str = ""
    etag: str = ""
    attachment_id: str = ""  # archives: the iTwin attachment the webhook names
    status: str = "lost"
    error: str | None = None  # the record's error code, when it is failed or rejected
    problems: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    uploads: list[Planned]
    wall_s: float
    drive_s: float
    counts: dict[str, int]
    dlq: dict[str, int]
    orphans: list[str]
    crashes_fired: int
    calls: CallLog
    pumps: dict[str, dict[str, int]]
    dead_lettered: list[str] = field(default_factory=list)

    def statuses(self) -> Counter[str]:
        return Counter(u.status for u in self.uploads)

    def _faults(self) -> tuple[int, int, int]:
        return self.calls.throttled, self.calls.server_errors, self.calls.dropped

    def invariants(self) -> list[tuple[str, int, int]]:
        """(name, measured, target) for every invariant the soak holds."""
        problems = Counter(p.split(":")[0] for u in self.uploads for p in u.problems)
        lost = sum(u.status == "lost" for u in self.uploads)
        return [
            ("uploads without exactly 1 attachment", problems["attachments"], 0),
            ("sha256 mismatches", problems["sha256"], 0),
            ("orphan metadata", len(self.orphans), 0),
            ("lost uploads (neither attached nor visibly failed or rejected)", lost, 0),
            ("uploads whose record and tags disagree", problems["record"], 0),
            # A soak whose faults never fired proves nothing: each planned crash fired, and each kind was answered.
            ("planned crashes that did not fire", sum(u.crash for u in self.uploads) - self.crashes_fired, 0),
            ("fault kinds (429, 5xx, dropped) never answered", sum(n == 0 for n in self._faults()), 0),
        ]

    def ok(self) -> bool:
        return all(measured == target for _, measured, target in self.invariants())

    def summary(self) -> dict[str, Any]:
        return {
            "uploads": len(self.uploads),
            "by_flow": dict(Counter(u.flow for u in self.uploads)),
            "bytes": sum(u.size for u in self.uploads),
            "unicode_names": sum(not u.name.isascii() for u in self.uploads),
            "duplicates": dict(Counter(u.duplicate for u in self.uploads if u.duplicate)),
            "crashes_planned": sum(u.crash for u in self.uploads),
            "crashes_fired": self.crashes_fired,
            "statuses": dict(self.statuses()),
            "dead_letter_queues": self.dlq,
            "dead_lettered": self.dead_lettered,
            "faults_answered": {
                "429": self.calls.throttled,
                "5xx": self.calls.server_errors,
                "dropped": self.calls.dropped,
                "vendor_calls": self.calls.calls,
            },
            "429s_then_waited_out": self.calls.honoured,
            "429s_then_called_again_early": self.calls.early,
            "429s_given_up_then_next_call_early": self.calls.early_after_giving_up,
            "early_calls_after_429": self.calls.early_gaps[:10],
            "pumps": self.pumps,
            "not_attached": [f"{u.flow} {u.key}: {u.status} {u.error}" for u in self.uploads if u.status != "attached"][
                :20
            ],
            "problems": [f"{u.flow} {u.key or u.name}: {p}" for u in self.uploads for p in u.problems][:20],
            "orphans": self.orphans[:20],
            "wall_s": round(self.wall_s, 1),
            "drive_s": round(self.drive_s, 1),
            "s_per_upload": round(self.wall_s / len(self.uploads), 3),
        }


class CallLog:
    """Every vendor call the relay's requestors send, as a client sees it: how many came back 429, 5xx or dropped,
    and whether the requestor that got a 429 waited its retry-after before its next call (honoured) or not."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = self.throttled = self.server_errors = self.dropped = self.honoured = self.early = 0
        self.early_after_giving_up = 0
        self.waited_s = 0.0  # from each 429 to the same requestor's next call, summed
        self.served: list[float] = []  # when each call that was not a 429 was answered (monotonic)
        self.waits: list[tuple[float, float]] = []  # (429 answered, the same requestor's next call)
        self.early_gaps: list[tuple[float, float, str]] = []
        self.last_429: dict[int, tuple[float, float, str | None]] = {}

    @contextmanager
    def watching(self) -> Iterator[CallLog]:
        from relay.errors import VendorConnectionError, VendorError
        from relay.transport.requestor import Requestor

        real = Requestor._send_once

        def send_once(requestor: Requestor, *args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.calls += 1
                prior = self.last_429.pop(id(requestor), None)
                if prior is not None:
                    at, wait, gave_up = prior
                    gap = time.monotonic() - at
                    self.waited_s += gap
                    self.waits.append((at, at + gap))
                    if gap >= wait - 0.05:
                        self.honoured += 1
                    elif gave_up:
                        # The requestor gave the call up (the message goes back to the queue); the container's
                        # next call is for something else: the vendor sees it early all the same.
                        self.early_after_giving_up += 1
                        self.early_gaps.append((round(gap, 3), wait, gave_up))
                    else:
                        self.early += 1
                        # Without the query: a signed part URL carries its signature there.
                        self.early_gaps.append((round(gap, 3), wait, f"{args[0]} {str(args[1]).split('?', 1)[0]}"))
            try:
                answer = real(requestor, *args, **kwargs)
                with self.lock:
                    self.served.append(time.monotonic())
                return answer
            except VendorError as error:
                with self.lock:
                    if error.http_status != 429:
                        self.served.append(time.monotonic())
                    if error.http_status == 429:
                        self.throttled += 1
                        self.last_429[id(requestor)] = (time.monotonic(), float(error.retry_after or 0), None)
                    elif error.http_status is not None and error.http_status >= 500:
                        self.server_errors += 1
                    elif isinstance(error, VendorConnectionError):
                        self.dropped += 1
                raise

        real_request = Requestor.request

        def request(requestor: Requestor, *args: Any, **kwargs: Any) -> Any:
            try:
                return real_request(requestor, *args, **kwargs)
            except VendorError as error:
                with self.lock:
                    last = self.last_429.get(id(requestor))
                    if last is not None and error.http_status == 429:
                        self.last_429[id(requestor)] = (last[0], last[1], error.gave_up or "not retried")
                raise

        Requestor.request = request  # type: ignore[method-assign,assignment]
        Requestor._send_once = send_once  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            Requestor._send_once = real  # type: ignore[method-assign]
            Requestor.request = real_request  # type: ignore[method-assign]


@contextmanager
def crashing(keys: set[str]) -> Iterator[set[str]]:
    """The runtime dies the first time an upload named in `keys` starts sending its bytes (after the create);
    yields the keys it died in."""
    from relay.aws.s3objects import ObjectStore

    fired: set[str] = set()
    lock = threading.Lock()
    real_open, real_range = ObjectStore.open, ObjectStore.open_range

    def die(key: str) -> None:
        with lock:
            if key not in keys or key in fired:
                return
            fired.add(key)
        raise SimulatedCrash(f"the runtime died sending {key}")

    def open_(store: ObjectStore, upload: Any, size: int) -> Any:
        die(upload.key)
        return real_open(store, upload, size)

    def open_range(store: ObjectStore, upload: Any, start: int, length: int) -> Any:
        die(upload.key)
        return real_range(store, upload, start, length)

    ObjectStore.open, ObjectStore.open_range = open_, open_range  # type: ignore[method-assign,assignment]
    try:
        yield fired
    finally:
        ObjectStore.open, ObjectStore.open_range = real_open, real_range  # type: ignore[method-assign]


def plan(count: int, seed: int, min_size: int, max_size: int, parents: dict[str, list[str]]) -> list[Planned]:
    rng = random.Random(seed)
    flows = [flow for flow, share in MIX for _ in range(round(share * count))]
    flows = (flows + ["issues"] * count)[:count]
    rng.shuffle(flows)
    duplicated = set(rng.sample(range(count), round(DUPLICATES * count)))
    concurrent = set(rng.sample(sorted(duplicated), len(duplicated) // 2))
    crash_candidates = [n for n in range(count) if flows[n] != "archive"]
    crashed = set(rng.sample(crash_candidates, max(1, round(CRASHES * count))))
    planned = []
    for n, flow in enumerate(flows):
        parent = rng.choice(
            parents["issues" if flow == "archive" and n % 2 else "forms" if flow == "archive" else flow]
        )
        if n == 0:
            size = min_size
        elif n == 1:
            size = max_size
        else:
            size = int(math.exp(rng.uniform(math.log(min_size), math.log(max_size))))
        stem = f"{rng.choice(UNICODE_STEMS)} {n:04d}" if rng.random() < 0.25 else f"soak-{n:04d}"
        name = unicodedata.normalize("NFC", f"{stem}-{uuid.UUID(int=rng.getrandbits(128)).hex[:6]}.bin")
        key = (
            ""
            if flow == "archive"
            else f"rfis/{PROJECT}/{parent}/{name}"
            if flow == "rfis"
            else f"{flow}/{parent}/{name}"
        )
        planned.append(
            Planned(
                n,
                flow,
                parent,
                name,
                size,
                "",
                f"soak caption {n}" if rng.random() < 0.3 else None,
                None if n not in duplicated else "concurrent" if n in concurrent else "later",
                n in crashed,
                key,
            )
        )
    return planned


def data_of(upload: Planned, seed: int) -> bytes:
    return random.Random(seed * 1_000_003 + upload.n).randbytes(upload.size)


class Soak:
    """One soak against a provisioned local stack (moto and the sandbox reachable at its URLs)."""

    def __init__(self, stack: Any, *, timeout_s: float = 20.0, log: Any = None) -> None:
        self.stack = stack
        self.timeout_s = timeout_s
        self.log = log
        self.s3 = stack.client("s3")
        self.sqs = stack.client("sqs")
        self.bucket = stack.resources["UploadBucket"]
        self.admin_url = f"{stack.sandbox_url}/__sandbox"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        answer = requests.request(method, f"{self.admin_url}/{path}", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    # -- set-up ------------------------------------------------------------------------------------

    def parents(self, run: str) -> dict[str, list[str]]:
        from relay import constants as c
        from relay.auth.secrets import SecretStore
        from relay.auth.tokens import refresh_secret
        from relay.settings import Settings
        from relay.vendors.factory import token_endpoint

        found: dict[str, list[str]] = {}
        for kind, how_many in (("issues", 8), ("forms", 5)):
            found[kind] = [f"{kind[:-1].upper()}-SOAK-{run}-{i}" for i in range(how_many)]
            for parent in found[kind]:
                self.admin("POST", f"itwin/{kind}", {"id": parent})
        self.container = self.admin("POST", "aps/projects", {"hub": HUB, "project": PROJECT})["container"]
        found["rfis"] = [f"RFI-SOAK-{run}-{i}" for i in range(8)]
        for rfi in found["rfis"]:
            self.admin("POST", "aps/rfis", {"container": self.container, "rfi": rfi})
        env = self.stack.env(S3_RFI)
        store = SecretStore(env["RELAY_APS_SECRET_ID"], default_token_url="x", default_scope="y")
        endpoint = token_endpoint(Settings.load(env), c.DEFAULT_APS_TOKEN_URL)
        refresh_secret(store, self.stack.client("secretsmanager"), endpoint, grant="refresh_token")
        return found

    def make_archive_sources(self, uploads: list[Planned], seed: int) -> None:
        """The attachments the webhooks will name, made in iTwin (metadata and file) before the faults start."""
        from relay.settings import Settings
        from relay.vendors.factory import itwin_requestor
        from relay.vendors.itwin import ITwinClient

        client = ITwinClient(itwin_requestor(Settings.load(self.stack.env(S3_ITWIN))))
        for up in uploads:
            kind = "issues" if up.n % 2 else "forms"
            data = data_of(up, seed)
            up.sha256 = hashlib.sha256(data).hexdigest()
            created = client.create_attachment(kind, up.parent, up.name, up.caption)  # type: ignore[arg-type]
            client.upload(created.location, lambda data=data: data, len(data))  # type: ignore[misc]
            up.attachment_id = created.attachment_id or ""
            up.key = f"archive/{kind}/{up.parent}/{up.attachment_id}/"

    def faults(self) -> None:
        """Per call: drop 5%, then 429 10%, then 5xx 10% (each rate is conditional on the ones before)."""
        statuses = (500, 502, 503, 504)
        for n, endpoint in enumerate(VENDOR_ENDPOINTS):
            self.admin(
                "POST",
                "faults",
                {
                    "endpoint": endpoint,
                    "drop_rate": DROP,
                    "throttle_rate": THROTTLE / (1 - DROP),
                    "error_rate": ERROR / (1 - DROP - THROTTLE),
                    "error_status": statuses[n % len(statuses)],
                },
            )

    # -- the traffic ---------------------------------------------------------------------------------

    def message(self, up: Planned) -> str:
        # What S3 sends again for a duplicate: the same object, eTag and versionId included (the idempotency key
        # is the version, or else the eTag: a duplicate without its eTag is the same upload all the same).
        obj = {"key": _quote(up.key), "size": up.size, "eTag": up.etag, "versionId": up.version_id}
        return json.dumps(
            {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": self.bucket}, "object": obj}}]}
        )

    def put_objects(self, uploads: list[Planned], seed: int) -> list[Planned]:
        """Every S3 upload, in plan order; a concurrent duplicate goes out one batch after its original (the
        RFI queue's batches hold one message: right after it), so another worker takes it at the same time.
        Returns the uploads whose duplicate is sent later."""
        later = []
        pending: dict[str, list[tuple[int, Planned]]] = {S3_ITWIN: [], S3_RFI: []}
        sent = Counter[str]()
        for up in uploads:
            function = S3_RFI if up.flow == "rfis" else S3_ITWIN
            data = data_of(up, seed)
            up.sha256 = hashlib.sha256(data).hexdigest()
            metadata = {"caption": up.caption} if up.caption else {}
            put = self.s3.put_object(Bucket=self.bucket, Key=up.key, Body=data, Metadata=metadata)
            up.version_id = put["VersionId"]
            up.etag = str(put["ETag"]).strip('"')
            sent[function] += 1
            gap = 1 if function == S3_RFI else 10
            for _, earlier in [p for p in pending[function] if sent[function] - p[0] >= gap]:
                self._send(function, self.message(earlier))
            pending[function] = [p for p in pending[function] if sent[function] - p[0] < gap]
            if up.duplicate == "concurrent":
                pending[function].append((sent[function], up))
            elif up.duplicate == "later":
                later.append(up)
        for function, rest in pending.items():
            for _, up in rest:
                self._send(function, self.message(up))
        return later

    def _send(self, function: str, body: str) -> None:
        queue = self.stack.resources[QUEUES[function][0]]
        self.sqs.send_message(QueueUrl=queue, MessageBody=body)

    def webhook(self, up: Planned, message_id: str | None = None, container: int = 0) -> None:
        from bench.itwin_webhooks import event_for
        from devstack.invoke import invoke
        from relay.flows.itwin_webhooks import sign
        from sandbox.seed import WEBHOOK_SECRET
        from sandbox.webhooks import webhook_event

        kind = up.key.split("/")[1]
        content = {"attachmentId": up.attachment_id, ("issueId" if kind == "issues" else "formId"): up.parent}
        event = webhook_event(f"{kind}.attachmentAttached.v1", content)
        event["messageId"] = message_id or f"soak-{up.n}-{uuid.uuid4().hex[:8]}"
        raw = json.dumps(event).encode()
        answer = invoke(
            self.stack, WEBHOOKS, event_for(raw, [sign(WEBHOOK_SECRET, raw)]), log=self.log, container=container
        )
        if answer["statusCode"] != 202:
            up.problems.append(f"webhook: answered {answer['statusCode']} {answer.get('body')}")

    def deliver_webhooks(self, uploads: list[Planned]) -> list[Planned]:
        later = []
        for up in uploads:
            if up.duplicate == "concurrent":  # iTwin's redelivery racing the first, in two receivers at once
                message_id = f"soak-{up.n}-{uuid.uuid4().hex[:8]}"
                threads = [threading.Thread(target=self.webhook, args=(up, message_id, c)) for c in (0, 1)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            else:
                self.webhook(up)
                if up.duplicate == "later":
                    later.append(up)
        return later

    # -- driving ---------------------------------------------------------------------------------------

    def depth(self, logical: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.stack.resources[logical],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def drive(self, pumps: dict[str, dict[str, int]], max_seconds: float = 3600.0) -> None:
        """Pump every flow's queue, each with its MaximumConcurrency, until all of them are empty (nothing
        visible, nothing in flight) twice in a row."""
        from devstack.invoke import pump

        concurrency = {S3_ITWIN: "MaximumConcurrency", S3_RFI: "RfiMaximumConcurrency", ARCHIVE: "ArchiveConcurrency"}
        deadline = time.monotonic() + max_seconds
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            for function, parameter in concurrency.items():
                report = pump(
                    self.stack,
                    function,
                    batch_size=self.batch_size(function),
                    idle_rounds=1,
                    retry_delay=1,
                    concurrency=int(self.parameter(parameter)),
                    # The archive worker keeps 20 s of its 300 for counting: it keeps the template's timeout.
                    timeout_s=None if function == ARCHIVE else self.timeout_s,
                    max_seconds=max(1.0, deadline - time.monotonic()),
                    log=self.log,
                    errors=self.log,
                )
                totals = pumps.setdefault(function, Counter())
                for name in ("invocations", "delivered", "failed"):
                    totals[name] += getattr(report, name)
                totals["crashed_invocations"] += len(report.crashes)
            busy = sum(self.depth(QUEUES[f][0]) for f in QUEUES)
            quiet = quiet + 1 if busy == 0 else 0
            if busy:
                time.sleep(0.5)

    def parameter(self, name: str) -> str:
        from devstack.template import shared

        return str(shared()["Parameters"][name]["Default"])

    def batch_size(self, function: str) -> int:
        from devstack.template import shared

        events = shared()["Resources"][function]["Properties"]["Events"]
        return int(next(e["Properties"]["BatchSize"] for e in events.values() if e["Type"] == "SQS"))

    # -- checking --------------------------------------------------------------------------------------

    def dead_letters(self) -> dict[str, int]:
        return {QUEUES[f][1]: self.depth(QUEUES[f][1]) for f in QUEUES}

    def dead_lettered(self, uploads: list[Planned]) -> list[str]:
        """What each message in the DLQs named, and what became of that upload (they stay queued)."""
        by_key = {u.key: u for u in uploads}
        found = []
        for function in QUEUES:
            url = self.stack.resources[QUEUES[function][1]]
            messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=5)
            for message in messages.get("Messages", []):
                body = json.loads(message["Body"])
                keys = [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", []) if "s3" in r]
                keys = keys or [f"archive/{body.get('kind')}/{body.get('parentId')}/{body.get('attachmentId')}/"]
                for key in keys:
                    up = by_key.get(key)
                    seen = (
                        "not in the soak" if up is None else f"{up.status}, duplicate {up.duplicate}, crash {up.crash}"
                    )
                    found.append(f"{QUEUES[function][1]}: {key}: {seen}")
        return found

    def records(self) -> dict[str, list[dict[str, Any]]]:
        ddb = self.stack.client("dynamodb")
        by_key: dict[str, list[dict[str, Any]]] = {}
        for page in ddb.get_paginator("scan").paginate(
            TableName=self.stack.resources["TransfersTable"], ConsistentRead=True
        ):
            for item in page["Items"]:
                row = {k: v.get("S", v.get("N", v.get("SS"))) for k, v in item.items()}
                if not str(row["upload"]).startswith("claim#") and "key" in row:
                    by_key.setdefault(str(row["key"]), []).append(row)
        return by_key

    def tags(self, up: Planned) -> dict[str, str]:
        tag_set = self.s3.get_object_tagging(Bucket=self.bucket, Key=up.key, VersionId=up.version_id)["TagSet"]
        return {t["Key"]: t["Value"] for t in tag_set}

    def delivery_record(self, record_id: str) -> dict[str, Any] | None:
        item = (
            self.stack.client("dynamodb")
            .get_item(
                TableName=self.stack.resources["WebhookDeliveriesTable"],
                Key={"id": {"S": record_id}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return {k: v.get("S", v.get("N")) for k, v in item.items()} if item else None

    def check(self, uploads: list[Planned]) -> list[str]:
        """Each upload's status and problems; returns the orphans found in the soak's parents."""
        state = self.admin("GET", "inspect")
        records = self.records()
        orphans: list[str] = []
        names = {(u.flow, u.parent, u.name) for u in uploads}
        for kind in ("issues", "forms"):
            for parent, atts in state["itwin"][kind].items():
                if not any(u.parent == parent for u in uploads):
                    continue
                for att in atts:
                    if att["sha256"] is None:
                        orphans.append(f"{kind}/{parent}: attachment {att['id']} ({att['fileName']}) has no file")
                    elif (kind, parent, att["fileName"]) not in names and not any(
                        u.flow == "archive" and u.attachment_id == att["id"] for u in uploads
                    ):
                        orphans.append(f"{kind}/{parent}: attachment {att['id']} ({att['fileName']}) is nobody's")
        rfi_atts = {
            key.split("/", 1)[1]: atts
            for key, atts in state["aps"]["rfis"].items()
            if key.split("/", 1)[0] == self.container
        }
        attached_items = {a["urn"] for atts in rfi_atts.values() for a in atts}
        soak_rfi_names = {dm_name(u) for u in uploads if u.flow == "rfis"}
        for item_id, item in state["aps"]["items"].items():
            if item["name"] in soak_rfi_names and item_id not in attached_items:
                orphans.append(f"DM item {item_id} ({item['name']}) is attached to no RFI")
        archived = self.archive_versions()
        for up in uploads:
            if up.flow == "archive":
                self.check_archive(up, archived.get(up.key, []))
            elif up.flow == "rfis":
                self.check_rfi(up, rfi_atts.get(up.parent, []), state["aps"]["items"], records.get(up.key, []))
            else:
                self.check_itwin(up, state["itwin"][up.flow].get(up.parent, []), records.get(up.key, []))
        return orphans

    def settled(self, up: Planned, tags: dict[str, str], records: list[dict[str, Any]]) -> dict[str, Any] | None:
        if len(records) != 1:
            up.problems.append(f"record: {len(records)} records for the key")
            return None
        record = records[0]
        up.status = str(record.get("status"))
        up.error = record.get("error_code")
        if tags.get("relay-status") != up.status:
            up.problems.append(f"record: status {up.status!r}, tag {tags.get('relay-status')!r}")
        if up.status not in ("attached", "failed", "rejected"):
            up.status = "lost"
        return record

    @staticmethod
    def only_one(up: Planned, mine: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The upload's one attachment, or None with the problem noted (an upload not attached must have none)."""
        if up.status != "attached":
            if mine:
                up.problems.append(f"attachments: {len(mine)} for an upload that is {up.status} ({up.error})")
            return None
        if len(mine) != 1:
            up.problems.append(f"attachments: {len(mine)}")
            return None
        return mine[0]

    def check_itwin(self, up: Planned, atts: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
        tags = self.tags(up)
        record = self.settled(up, tags, records)
        att = self.only_one(up, [a for a in atts if a["fileName"] == up.name])
        if att is None:
            return
        if att["sha256"] != up.sha256:
            up.problems.append("sha256: the attachment's file differs")
        if record is not None and not (record.get("attachment_id") == tags.get("relay-attachment-id") == att["id"]):
            up.problems.append(
                f"record: attachment {record.get('attachment_id')}, tag {tags.get('relay-attachment-id')}, "
                f"iTwin {att['id']}"
            )

    def check_rfi(
        self,
        up: Planned,
        atts: list[dict[str, Any]],
        items: dict[str, dict[str, Any]],
        records: list[dict[str, Any]],
    ) -> None:
        tags = self.tags(up)
        record = self.settled(up, tags, records)
        att = self.only_one(up, [a for a in atts if items.get(a["urn"], {}).get("name") == dm_name(up)])
        if att is None:
            return
        versions = [v["sha256"] for v in items[att["urn"]]["versions"]]
        if versions != [up.sha256]:
            up.problems.append(f"sha256: the DM item's versions are {len(versions)}, matching: {up.sha256 in versions}")
        if record is not None and not (
            record.get("rfi_attachment_id") == tags.get("relay-attachment-id") == att["id"]
            and record.get("item_id") == tags.get("relay-dm-item") == att["urn"]
        ):
            up.problems.append("record: the record, the tags and the RFI name different attachments or items")

    def archive_versions(self) -> dict[str, list[dict[str, Any]]]:
        """Every version under archive/, by its attachment's prefix, in one listing: moto server builds each
        ListObjectVersions answer from the whole bucket, and one call per archive took its memory past 20 GiB."""
        found: dict[str, list[dict[str, Any]]] = {}
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix="archive/"):
            for version in page.get("Versions", []):
                found.setdefault(str(version["Key"]).rsplit("/", 1)[0] + "/", []).append(version)
        return found

    def check_archive(self, up: Planned, versions: list[dict[str, Any]]) -> None:
        kind = up.key.split("/")[1]
        record = self.delivery_record(f"archive#{kind}/{up.parent}/{up.attachment_id}") or {}
        status = record.get("status")
        up.status = {"archived": "attached", "skipped": "attached", "failed": "failed"}.get(str(status), "lost")
        if up.status == "failed":
            if versions:
                up.problems.append(f"attachments: {len(versions)} copies of an archive recorded failed")
            return
        if len(versions) != 1:
            up.problems.append(f"attachments: {len(versions)} archived copies")
            return
        head = self.s3.head_object(Bucket=self.bucket, Key=versions[0]["Key"], VersionId=versions[0]["VersionId"])
        if head["Metadata"].get("sha256") != up.sha256:
            up.problems.append("sha256: the archived copy differs")
        if up.status == "lost" and versions:
            up.problems.append(f"record: a copy exists but the deliveries record says {status!r}")


def _quote(key: str) -> str:
    return quote_plus(key, safe="/")


def run_soak(
    stack: Any,
    count: int = 1000,
    *,
    seed: int = 11,
    min_size: int = 1024,
    max_size: int = 8 * MiB,
    timeout_s: float = 20.0,
    log: Any = None,
) -> SoakResult:
    """The soak against `stack` (provisioned, its AWS endpoints in os.environ); the faults are cleared after."""
    soak = Soak(stack, timeout_s=timeout_s, log=log)
    began = time.perf_counter()
    parents = soak.parents(uuid.UUID(int=random.Random(seed).getrandbits(128)).hex[:6] + uuid.uuid4().hex[:4])
    uploads = plan(count, seed, min_size, max_size, parents)
    archives = [u for u in uploads if u.flow == "archive"]
    soak.make_archive_sources(archives, seed)
    calls = CallLog()
    pumps: dict[str, dict[str, int]] = {}
    try:
        soak.faults()
        with calls.watching(), crashing({u.key for u in uploads if u.crash}) as fired:
            later = soak.put_objects([u for u in uploads if u.flow != "archive"], seed)
            later_hooks = soak.deliver_webhooks(archives)
            driving = time.perf_counter()
            soak.drive(pumps)
            for up in later:
                soak._send(S3_RFI if up.flow == "rfis" else S3_ITWIN, soak.message(up))
            for up in later_hooks:
                soak.webhook(up)
            soak.drive(pumps)
            drive_s = time.perf_counter() - driving
    finally:
        soak.admin("DELETE", "faults")
    orphans = soak.check(uploads)
    return SoakResult(
        uploads,
        time.perf_counter() - began,
        drive_s,
        soak.admin("GET", "inspect")["requests"],
        soak.dead_letters(),
        orphans,
        len(fired),
        calls,
        {f: dict(c) for f, c in pumps.items()},
        soak.dead_lettered(uploads),
    )


def report(result: SoakResult) -> int:
    print(json.dumps(result.summary(), indent=2, ensure_ascii=False))
    for name, measured, target in result.invariants():
        print(("PASS " if measured == target else "MISS ") + f"{name}: {measured} (target {target})")
    n = len(result.uploads)
    print(f"wall time {result.wall_s:.1f} s for {n} uploads: {result.wall_s / n * 1000:.0f} ms per upload")
    return 0 if result.ok() else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--min-size", type=int, default=1024)
    parser.add_argument("--max-size", type=int, default=8 * MiB)
    parser.add_argument("--log", default=".local/soak-functions.log", help="the functions' own output")
    args = parser.parse_args()
    local_env()
    # Short backoff, set as a user would (retry-after is still honoured).
    os.environ.update(RELAY_RETRY_BASE_DELAY="0.05", RELAY_RETRY_MAX_DELAY="0.5")
    from devstack.invoke import open_log
    from devstack.template import ROOT

    with provisioned_stack() as stack, open_log(ROOT / args.log, truncate=True) as log:
        result = run_soak(stack, args.uploads, seed=args.seed, min_size=args.min_size, max_size=args.max_size, log=log)
    return report(result)


def dm_name(up: Planned) -> str:
    """The DM item an RFI upload makes is named as the flow names it (the RFI id, then the file name)."""
    from relay.flows.s3_to_rfi.targets import parse_target

    return parse_target(up.key).dm_name


if __name__ == "__main__":
    sys.exit(main())
