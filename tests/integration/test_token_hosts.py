"""The bearer token reaches configured hosts only, in every flow that is handed a URL by a vendor.

Each row points one vendor-given URL at another host: a listener on its own port that records every
request and, where it stands for S3, forwards it to the sandbox, so only the relay's own decision keeps
the token (or the file) from it. Rows already proved elsewhere are not repeated here: a Location on an
unreachable host, another scheme (`ftp://`, `HTTP://`), user information or a backslash
(test_s3_to_itwin.py), redirects of create and upload, a hostile next link, and the part PUTs to the
API host itself (test_s3_to_rfi.py).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devstack.invoke import pump
from tests.integration.conftest import Api, Harness, sha256

pytestmark = pytest.mark.integration
PHOTO = b"\xff\xd8\xff token hosts " * 200
RFI_FUNCTION = "S3ToRfiFunction"
RFI_PROJECT = "b.demo-project"
TOKEN_SHAPE = re.compile(r"sbx-(itwin|aps|refresh)-[A-Za-z0-9_-]{32}")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "server", "date"}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Foreign:
    """Another host: a listener on its own port, keeping every request; with `upstream`, a proxy to it."""

    upstream: str | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        foreign = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                foreign.connections += 1

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                foreign.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
                status, headers, content = 200, [("ETag", '"foreign"')], b""
                if foreign.upstream is not None:
                    sent = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    answer = requests.request(
                        self.command, foreign.upstream + self.path, data=body, headers=sent, timeout=30
                    )
                    status, content = answer.status_code, answer.content
                    headers = [(k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="foreign-host", daemon=True)
        self._thread.start()

    def authorizations(self) -> list[str]:
        """The path of every request that carried an Authorization header (never its value)."""
        return [s.path for s in self.seen if any(k.lower() == "authorization" for k in s.headers)]

    def tokens_seen(self) -> int:
        """Sandbox tokens anywhere in what arrived: a header, the query, the body."""
        texts = [s.path + json.dumps(s.headers) + s.body.decode("latin-1") for s in self.seen]
        return sum(len(TOKEN_SHAPE.findall(t)) for t in texts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    harness: Harness
    api: Api
    foreign: Foreign

    def config(self, **settings: Any) -> None:
        self.harness.admin("PUT", "config", settings)

    def count(self, endpoint: str) -> int:
        return self.harness.counts().get(endpoint, 0)


@pytest.fixture
def world(harness: Harness, api: Api) -> Iterator[World]:
    foreign = Foreign(upstream=harness.sandbox)
    yield World(harness, api, foreign)
    foreign.close()
    harness.admin("PUT", "config", {"location_base": None, "part_url_base": None})


# -- the flows, each ending in what a user would see -------------------------------------------------


def itwin_upload_with_location(base: Callable[[World], str]) -> Callable[[World], str]:
    """S3 → iTwin, create answering a Location under `base`: the tag it ends with; no upload anywhere."""

    def run(w: World) -> str:
        h = w.harness
        issue = h.new_parent()
        key = f"issues/{issue}/elsewhere.jpg"
        h.put(key, PHOTO)
        uploads = w.count("itwin.issues.upload")
        w.config(location_base=base(w))
        assert h.deliver().failed == 0
        assert w.count("itwin.issues.upload") == uploads
        assert h.attachments(issue) == []  # the metadata it created was deleted
        tags = h.tags(key)
        return f"{tags['relay-status']} {tags['relay-error']}"

    return run


def rfi_upload_with_parts_on(base: Callable[[World], str]) -> Callable[[World], str]:
    """S3 → RFI, the signed part URLs under `base`: the outcome, and the bytes APS ends up holding."""

    def run(w: World) -> str:
        from relay import constants as c
        from relay.auth.secrets import SecretStore
        from relay.auth.tokens import refresh_secret
        from relay.settings import Settings
        from relay.vendors.factory import token_endpoint

        h = w.harness
        env = h.stack.env(RFI_FUNCTION)
        store = SecretStore(env["RELAY_APS_SECRET_ID"], default_token_url="x", default_scope="y")
        endpoint = token_endpoint(Settings.load(env), c.DEFAULT_APS_TOKEN_URL)
        refresh_secret(store, h.stack.client("secretsmanager"), endpoint, grant="refresh_token")
        project = h.admin("POST", "aps/projects", {"hub": "b.demo-hub", "project": RFI_PROJECT})
        rfi = f"RFI-{uuid.uuid4().hex[:8]}"
        h.admin("POST", "aps/rfis", {"container": project["container"], "rfi": rfi})
        for logical in ("RfiUploadQueue", "RfiUploadDeadLetterQueue"):
            h.empty_queue(logical)
        key = f"rfis/{RFI_PROJECT}/{rfi}/parts-elsewhere.jpg"
        h.put(key, PHOTO)
        w.config(part_url_base=base(w))
        report = pump(h.stack, RFI_FUNCTION)
        assert report.failed == 0, report
        (attachment,) = h.inspect()["aps"]["rfis"][f"{project['container']}/{rfi}"]
        (version,) = h.inspect()["aps"]["items"][attachment["urn"]]["versions"]
        assert version["sha256"] == sha256(PHOTO)
        return h.tags(key)["relay-status"]

    return run


def new_form_attachment(w: World, name: str = "report.pdf", data: bytes = PHOTO) -> tuple[str, str]:
    form = w.harness.new_parent("forms")
    return form, w.api.attach("forms", form, name, data)


def download_redirected(w: World) -> dict[str, Any]:
    """iTwin's download answers 302 to a pre-signed URL on the other host, as a blob store would."""
    presigned = f"{w.foreign.url}/attachments/file.pdf?X-Amz-Signature=0123abcd&X-Amz-Expires=900"
    return {"status": 302, "headers": {"Location": presigned}, "body": ""}


def api_file_when_the_download_redirects(w: World) -> str:
    form, att = new_form_attachment(w)
    w.harness.fault("itwin.forms.download", fail_next=[download_redirected(w)])
    answer = w.api.get(f"/forms/{form}/attachments/{att}/file")
    assert w.api.archived("forms", form) == {}
    return f"{answer.status_code} {answer.json()['code']}"


def archive_job_when_the_download_redirects(w: World) -> str:
    form, _ = new_form_attachment(w)
    w.harness.fault("itwin.forms.download", fail_next=[download_redirected(w)])
    job = w.api.post(f"/forms/{form}/archive").json()
    report = w.api.archive_pump()
    assert not report.crashes
    done = w.api.get(f"/archive-jobs/{job['jobId']}").json()
    assert w.api.archived("forms", form) == {}
    return f"{done['state']} archived={done['archived']} failed={done['failed']}"


def api_file_when_the_listing_offers_a_file_link_elsewhere(w: World) -> str:
    """A listing whose attachment carries `_links.file` on the other host: the file still comes from the API."""
    form, att = new_form_attachment(w)
    (listed,) = w.harness.attachments(form, "forms")
    item = {k: listed[k] for k in ("id", "fileName", "createdDateTime", "size", "caption", "binding", "type")}
    item["_links"] = {"file": {"href": f"{w.foreign.url}/attachments/{att}?X-Amz-Signature=0123abcd"}}
    w.harness.fault("itwin.forms.list", fail_next=[{"body": {"attachments": [item]}, "count": 5}])
    downloads = w.count("itwin.forms.download")
    answer = w.api.get(f"/forms/{form}/attachments/{att}/file")
    assert w.count("itwin.forms.download") == downloads + 1
    assert requests.get(answer.headers["Location"], timeout=30).content == PHOTO
    return str(answer.status_code)


def api_file_url_is_presigned_s3_without_a_bearer(w: World) -> str:
    """The URL /file hands out is SigV4-signed for the configured S3 endpoint and works with no header."""
    form, att = new_form_attachment(w)
    answer = w.api.get(f"/forms/{form}/attachments/{att}/file")
    url = answer.headers["Location"]
    moto = urlsplit(w.harness.stack.moto_url)
    assert (urlsplit(url).scheme, urlsplit(url).netloc) == (moto.scheme, moto.netloc)
    assert "X-Amz-Signature=" in url
    assert not TOKEN_SHAPE.search(url + answer.text)
    got = requests.get(url, timeout=30)
    assert got.request.headers.get("Authorization") is None
    assert got.content == PHOTO
    return f"{answer.status_code} {got.status_code}"


@dataclass(frozen=True)
class Row:
    run: Callable[[World], str]
    outcome: str
    reaches_foreign: bool  # whether anything at all goes to the other host (S3's part URLs: yes, no token)


ROWS = {
    # iTwin: create's Location
    "itwin-location-on-another-port-of-the-api-host": Row(
        itwin_upload_with_location(lambda w: w.foreign.url), "failed UnsafeLocation", False
    ),
    "itwin-location-on-another-name-for-this-machine": Row(
        itwin_upload_with_location(lambda w: f"http://localhost:{w.foreign.port}"), "failed UnsafeLocation", False
    ),
    "itwin-location-https-on-the-api-host": Row(
        itwin_upload_with_location(lambda w: w.harness.sandbox.replace("http://", "https://")),
        "failed UnsafeLocation",
        False,
    ),
    # APS: signeds3upload's part URLs are S3's, another host: the parts go there, the token never
    "aps-signed-part-urls-on-another-host": Row(rfi_upload_with_parts_on(lambda w: w.foreign.url), "attached", True),
    # Pre-signed URLs: iTwin's file, and the archive copy the API hands out
    "itwin-download-redirects-to-a-presigned-url-api-file": Row(
        api_file_when_the_download_redirects, "502 UnexpectedStatus", False
    ),
    "itwin-download-redirects-to-a-presigned-url-archive-job": Row(
        archive_job_when_the_download_redirects, "completed_with_failures archived=0 failed=1", False
    ),
    "itwin-listing-links-the-file-on-another-host": Row(
        api_file_when_the_listing_offers_a_file_link_elsewhere, "302", False
    ),
    "api-file-hands-out-a-presigned-s3-url-needing-no-bearer": Row(
        api_file_url_is_presigned_s3_without_a_bearer, "302 200", False
    ),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_the_bearer_token_never_reaches_an_unconfigured_host(world: World, name: str):
    row = ROWS[name]
    assert row.run(world) == row.outcome
    foreign = world.foreign
    assert foreign.authorizations() == []
    assert foreign.tokens_seen() == 0
    if row.reaches_foreign:
        assert foreign.seen, "the row's URLs were never used: the row proves nothing"
        assert {s.method for s in foreign.seen} == {"PUT"}
    else:
        assert foreign.connections == 0
