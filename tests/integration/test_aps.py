"""APS over real HTTP: rotating refresh tokens, Data Management upload and RFI attachments."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import pytest
import requests

from relay.auth.secrets import SecretStore
from relay.auth.tokens import refresh_secret
from relay.errors import InvalidRequestError, TokenEndpointError
from relay.settings import Settings
from relay.transport.requestor import Requestor
from relay.vendors.aps import ApsClient, StorageObject
from relay.vendors.factory import aps_client
from relay.vendors.factory import token_endpoint as make_token_endpoint
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def token_endpoint(harness: Harness) -> Requestor:
    from relay import constants as c

    return make_token_endpoint(Settings.load(harness.stack.env("S3ToItwinFunction")), c.DEFAULT_APS_TOKEN_URL)


def refreshed_client(harness: Harness) -> ApsClient:
    env = harness.stack.env("S3ToItwinFunction")
    store = SecretStore(env["RELAY_APS_SECRET_ID"], default_token_url="x", default_scope="y")
    refresh_secret(store, harness.stack.client("secretsmanager"), token_endpoint(harness), grant="refresh_token")
    return aps_client(Settings.load(env))


def make_item(harness: Harness, client: ApsClient, data: bytes, name: str) -> tuple[str, str]:
    """Upload `data` into the demo project's folder; return (RFI container id, item urn)."""
    project = "b.demo-project"
    client_project = client.rfi_container_id("b.demo-hub", project)
    (folder,) = client.top_folders("b.demo-hub", project)
    obj = client.create_storage(project, folder["id"], name)
    client.upload_object(obj, len(data), lambda start, n: io.BytesIO(data[start : start + n]))
    item_id, _ = client.create_item(project, folder["id"], name, obj)
    return client_project, item_id


def test_reused_refresh_token_is_refused(harness: Harness):
    from sandbox.seed import APS_CLIENT

    first = harness.admin("POST", "aps/refresh-tokens", {"client_id": APS_CLIENT[0]})["refresh_token"]
    form = {
        "grant_type": "refresh_token",
        "refresh_token": first,
        "client_id": APS_CLIENT[0],
        "client_secret": APS_CLIENT[1],
    }
    ok = requests.post(f"{harness.sandbox}/authentication/v2/token", data=form, timeout=10)
    assert ok.status_code == 200
    assert ok.json()["refresh_token"] != first
    again = requests.post(f"{harness.sandbox}/authentication/v2/token", data=form, timeout=10)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_refresher_rotates_the_secret_and_the_old_token_dies(harness: Harness):
    env = harness.stack.env("S3ToItwinFunction")
    secrets = harness.stack.client("secretsmanager")
    before = json.loads(secrets.get_secret_value(SecretId=env["RELAY_APS_SECRET_ID"])["SecretString"])
    refreshed_client(harness)
    after = json.loads(secrets.get_secret_value(SecretId=env["RELAY_APS_SECRET_ID"])["SecretString"])
    assert after["refresh_token"] != before["refresh_token"]
    assert after["access_token"]
    assert after["expires_at"] > 0
    store = SecretStore(env["RELAY_APS_SECRET_ID"], default_token_url="x", default_scope="y")
    secrets.put_secret_value(SecretId=env["RELAY_APS_SECRET_ID"], SecretString=json.dumps(before))  # a stale writer
    with pytest.raises(TokenEndpointError) as info:
        refresh_secret(store, secrets, token_endpoint(harness), grant="refresh_token")
    assert info.value.code == "invalid_grant"
    assert before["refresh_token"] not in str(info.value)
    secrets.put_secret_value(SecretId=env["RELAY_APS_SECRET_ID"], SecretString=json.dumps(after))


def test_multipart_upload_item_and_rfi_attachment(harness: Harness):
    client = refreshed_client(harness)
    harness.admin("PUT", "config", {"min_part_bytes": 1024})
    data = bytes(range(256)) * 40  # 10 KiB in parts
    project = "b.demo-project"
    container = client.rfi_container_id("b.demo-hub", project)
    (folder,) = client.top_folders("b.demo-hub", project)
    obj = client.create_storage(project, folder["id"], "scan.bin")
    client.upload_object(obj, len(data), lambda s, n: io.BytesIO(data[s : s + n]), part_size=1024)
    item, version = client.create_item(project, folder["id"], "scan.bin", obj)
    assert version == f"urn:adsk.wipprod:fs.file:vf.{item.rsplit(':', 1)[-1]}?version=1"
    assert list(client.item_versions(project, item)) == [(version, obj.object_id)]
    attachment = client.attach_to_rfi(container, "RFI-1", "scan.bin", item)
    assert attachment["urn"] == item
    versions = harness.inspect()["aps"]["items"][item]["versions"]
    assert versions[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert any(a["id"] == attachment["id"] for a in client.list_rfi_attachments(container, "RFI-1"))
    client.delete_rfi_attachment(container, "RFI-1", attachment["id"])
    assert all(a["id"] != attachment["id"] for a in client.list_rfi_attachments(container, "RFI-1"))
    harness.admin("PUT", "config", {"min_part_bytes": 5 * 1024 * 1024})


def signed(harness: Harness, client: ApsClient, obj: StorageObject, **params: Any) -> requests.Response:
    token = client.requestor.tokens.token()  # type: ignore[union-attr]
    return requests.get(
        f"{harness.sandbox}/oss/v2/buckets/{obj.bucket_key}/objects/{obj.object_key}/signeds3upload",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_signed_upload_rules(harness: Harness):
    client = refreshed_client(harness)
    project = "b.demo-project"
    (folder,) = client.top_folders("b.demo-hub", project)
    obj = client.create_storage(project, folder["id"], "rules.bin")
    assert signed(harness, client, obj, parts=26).status_code == 400  # at most 25 URLs per call
    answer = signed(harness, client, obj, parts=2).json()
    urls = answer["urls"]
    # Parts carry no Authorization header; one that does is refused.
    assert requests.put(urls[0], data=b"x", headers={"Authorization": "Bearer t"}, timeout=10).status_code == 400
    assert requests.put(urls[0], data=b"x" * 10, timeout=10).status_code == 200
    assert requests.put(urls[1], data=b"y" * 10, timeout=10).status_code == 200
    token = client.requestor.tokens.token()  # type: ignore[union-attr]
    complete = requests.post(
        f"{harness.sandbox}/oss/v2/buckets/{obj.bucket_key}/objects/{obj.object_key}/signeds3upload",
        json={"uploadKey": answer["uploadKey"]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert complete.status_code == 400  # part 1 is under the 5 MB minimum
    expired = urls[0].replace("X-Amz-Expires=", "X-Amz-Expires=1")  # tampered expiry: signature breaks
    assert requests.put(expired, data=b"x", timeout=10).status_code == 403


def test_expired_part_urls_answer_403_and_the_client_asks_again(harness: Harness, monkeypatch):
    import time

    client = refreshed_client(harness)
    project = "b.demo-project"
    (folder,) = client.top_folders("b.demo-hub", project)
    obj = client.create_storage(project, folder["id"], "late.bin")
    real_time = time.time
    calls = {"n": 0}

    def clock() -> float:
        calls["n"] += 1
        return float(real_time() - (3600 if calls["n"] == 1 else 0))  # the first URLs are signed already expired

    monkeypatch.setattr("sandbox.aps.time.time", clock)
    client.upload_object(obj, 4, lambda s, n: io.BytesIO(b"data"[s : s + n]))
    assert harness.counts()["aps.signeds3upload"] >= 2


def test_item_name_conflict_then_new_version(harness: Harness):
    client = refreshed_client(harness)
    project = "b.demo-project"
    (folder,) = client.top_folders("b.demo-hub", project)
    _, item = make_item(harness, client, b"v1", "drawing.pdf")
    obj = client.create_storage(project, folder["id"], "drawing.pdf")
    client.upload_object(obj, 2, lambda s, n: io.BytesIO(b"v2"[s : s + n]))
    with pytest.raises(InvalidRequestError) as info:
        client.create_item(project, folder["id"], "drawing.pdf", obj)
    assert info.value.http_status == 409
    second = client.create_version(project, item, "drawing.pdf", obj)
    assert len(harness.inspect()["aps"]["items"][item]["versions"]) == 2
    newest, first = client.item_versions(project, item)  # newest first, each with its storage object
    assert (newest, first[0].endswith("?version=1")) == ((second, obj.object_id), True)


# -- the sandbox holds every DM and RFI endpoint to the brief's rules ------------------------------


def dm_post(harness: Harness, client: ApsClient, path: str, body: Any, content_type: str) -> requests.Response:
    token = client.requestor.tokens.token()  # type: ignore[union-attr]
    return requests.post(
        f"{harness.sandbox}{path}",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        timeout=10,
    )


def test_dm_posts_take_only_the_json_api_content_type(harness: Harness):
    client = refreshed_client(harness)
    (folder,) = client.top_folders("b.demo-hub", "b.demo-project")
    body = {"data": {"type": "objects", "attributes": {"name": "a.bin"}}}
    body["data"]["relationships"] = {"target": {"data": {"type": "folders", "id": folder["id"]}}}
    path = "/data/v1/projects/b.demo-project/storage"
    assert dm_post(harness, client, path, body, "application/json").status_code == 400
    assert dm_post(harness, client, path, body, "application/vnd.api+json").status_code == 201


def test_an_item_needs_a_completed_upload(harness: Harness):
    client = refreshed_client(harness)
    (folder,) = client.top_folders("b.demo-hub", "b.demo-project")
    obj = client.create_storage("b.demo-project", folder["id"], "never-completed.bin")
    with pytest.raises(InvalidRequestError) as info:
        client.create_item("b.demo-project", folder["id"], "never-completed.bin", obj)
    assert info.value.http_status == 400


def test_folder_contents_list_items_with_their_tip_storage_and_page(harness: Harness):
    client = refreshed_client(harness)
    (folder,) = client.top_folders("b.demo-hub", "b.demo-project")
    assert folder["attributes"]["displayName"] == "Project Files"
    _, item = make_item(harness, client, b"tip", f"tip-{uuid.uuid4().hex[:6]}.bin")
    listed = {i.item_id: i for i in client.folder_items("b.demo-project", folder["id"])}
    assert str(listed[item].tip_storage_id).startswith("urn:adsk.objects:os.object:")
    token = client.requestor.tokens.token()  # type: ignore[union-attr]
    page = requests.get(
        f"{harness.sandbox}/data/v1/projects/b.demo-project/folders/{folder['id']}/contents",
        params={"page[limit]": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert len(page["data"]) == 1
    if len(listed) > 1:
        assert page["links"]["next"]["href"].startswith(harness.sandbox)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "n" * 401, "urnType": "dm"}, 400),
        ({"name": "photo.jpg", "urnType": "photo"}, 400),
        ({"name": "photo.jpg", "urnType": "dm", "urn": "urn:adsk.wipprod:dm.lineage:nothing"}, 400),
    ],
)
def test_the_rfi_attach_holds_name_urn_type_and_urn_to_the_rules(harness: Harness, body, status):
    client = refreshed_client(harness)
    container, item = make_item(harness, client, b"x", f"rule-{uuid.uuid4().hex[:6]}.bin")
    token = client.requestor.tokens.token()  # type: ignore[union-attr]
    answer = requests.post(
        f"{harness.sandbox}/bim360/rfis/v2/containers/{container}/rfis/RFI-1/attachments",
        json={"urn": item, **body},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == status


def test_per_part_latency_is_injected_per_part_put(harness: Harness):
    import time

    client = refreshed_client(harness)
    (folder,) = client.top_folders("b.demo-hub", "b.demo-project")
    obj = client.create_storage("b.demo-project", folder["id"], f"slow-{uuid.uuid4().hex[:6]}.bin")
    harness.admin("PUT", "config", {"min_part_bytes": 1})
    harness.fault("aps.s3part", latency_ms=100)
    try:
        started = time.monotonic()
        client.upload_parts(obj, 4, 1, lambda s, n: io.BytesIO(b"abcd"[s : s + n]), concurrency=1)
        sequential = time.monotonic() - started
        started = time.monotonic()
        obj2 = client.create_storage("b.demo-project", folder["id"], f"fast-{uuid.uuid4().hex[:6]}.bin")
        client.upload_parts(obj2, 4, 1, lambda s, n: io.BytesIO(b"abcd"[s : s + n]), concurrency=4)
        parallel = time.monotonic() - started
    finally:
        harness.admin("DELETE", "faults")
        harness.admin("PUT", "config", {"min_part_bytes": 5 * 1024 * 1024})
    assert sequential >= 0.4
    assert parallel < sequential
