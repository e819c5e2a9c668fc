"""APS user tokens over real HTTP: the sign-in command end to end, the single-writer refresher, and handlers that
only read the secret (moto server and the sandbox)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import requests
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from devstack.invoke import invoke
from relay.cli import main
from relay.flows.aps_token_refresher import ApsTokenRefresher, build_aps_token_refresher
from relay.settings import Settings
from relay.vendors.factory import aps_client
from sandbox.seed import APS_CLIENT, DEMO_HUB, DEMO_PROJECT
from tests.conftest import load_event
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration
FUNCTION = "ApsTokenRefresherFunction"


class Killed(BaseException):
    """Lambda's timeout or an OOM: the process stops where it is, no except clause runs."""


class Recorder:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.names.append(name)


class Tokens:
    """The APS secret, the lease item, and runs of the refresher, as one test drives them."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.env = harness.stack.env(FUNCTION)
        self.secret_id = self.env["RELAY_APS_SECRET_ID"]
        self.sm = harness.stack.client("secretsmanager")
        self.ddb = harness.stack.client("dynamodb")

    def value(self) -> dict[str, Any]:
        return dict(json.loads(self.sm.get_secret_value(SecretId=self.secret_id)["SecretString"]))

    def version(self) -> tuple[str, str]:
        answer = self.sm.get_secret_value(SecretId=self.secret_id)
        return answer["VersionId"], answer["SecretString"]

    def signed_in(self, expires_in: float = 60.0) -> dict[str, Any]:
        """A secret as a sign-in leaves it, with an access token expiring in `expires_in` seconds."""
        refresh = self.harness.admin("POST", "aps/refresh-tokens", {"client_id": APS_CLIENT[0]})["refresh_token"]
        value = {
            "client_id": APS_CLIENT[0],
            "client_secret": APS_CLIENT[1],
            "token_url": f"{self.harness.sandbox}/authentication/v2/token",
            "scope": "data:read data:write data:create",
            "refresh_token": refresh,
            "refresh_token_issued_at": time.time(),
            "access_token": "not-yet-issued",
            "expires_at": time.time() + expires_in,
        }
        self.sm.put_secret_value(SecretId=self.secret_id, SecretString=json.dumps(value))
        return value

    def clear_lease(self) -> None:
        self.ddb.delete_item(
            TableName=self.harness.stack.resources["TokenLeaseTable"],
            Key={"id": {"S": f"aps-refresh#{self.secret_id}"}},
        )

    def settings(self, **env: str) -> Settings:
        return Settings.load(self.env | env)

    def refresher(
        self, *, always: bool = False, clock: Callable[[], float] = time.time, **injected: Any
    ) -> ApsTokenRefresher:
        """A container's refresher with its own clients (boto3 clients are not shared across threads)."""
        session = boto3.session.Session()
        endpoint = self.harness.stack.moto_url
        secrets = injected.pop("secrets_client", None) or session.client("secretsmanager", endpoint_url=endpoint)
        # A margin of 2 h makes any hour-long token "about to expire": the refresher refreshes now.
        settings = self.settings(**({"RELAY_APS_REFRESH_MARGIN_MINUTES": "120"} if always else {}))
        return build_aps_token_refresher(
            settings,
            secrets_client=secrets,
            dynamodb_client=session.client("dynamodb", endpoint_url=endpoint),
            metrics=injected.pop("metrics", None) or Recorder(),
            clock=clock,
            **injected,
        )

    def token_calls(self) -> int:
        return int(self.harness.counts().get("aps.token", 0))


@pytest.fixture
def tokens(harness: Harness) -> Iterator[Tokens]:
    t = Tokens(harness)
    t.clear_lease()
    t.signed_in(expires_in=3600)
    yield t
    # Later tests (test_aps.py) need a working refresh token in the secret, and a free lease.
    harness.admin("PUT", "config", {"aps_consent": "allow"})
    t.clear_lease()
    t.signed_in(expires_in=3600)


# -- the sign-in command --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """What a person's browser does with the printed URL: open it, and follow the redirect to the callback."""

    def __init__(self, tamper: Callable[[str], str] | None = None) -> None:
        self.tamper = tamper
        self.redirects: list[str] = []

    def __call__(self, url: str) -> None:
        answer = requests.get(url, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        self.redirects.append(location)
        requests.get(self.tamper(location) if self.tamper else location, timeout=10)


def login(tokens: Tokens, opener: Callable[[str], object], *extra: str, port: int | None = None) -> int:
    redirect = f"http://127.0.0.1:{port or free_port()}/callback"
    argv = ["aps-login", "--secret-id", tokens.secret_id, "--api-url", tokens.harness.sandbox]
    argv += ["--redirect-uri", redirect, "--userinfo-url", f"{tokens.harness.sandbox}/userinfo", "--no-browser"]
    return main([*argv, *extra], opener=opener)


@pytest.fixture
def login_env(tokens: Tokens, monkeypatch: pytest.MonkeyPatch) -> Tokens:
    """An engineer's shell: AWS pointed at the stack (moto), and the sandbox allowed as the token host."""
    for name in ("RELAY_ALLOWED_TOKEN_HOSTS", "RELAY_APS_API_URL", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, tokens.env[name])
    return tokens


def test_login_end_to_end_writes_a_working_pair_and_prints_no_token(login_env: Tokens, capfd):
    tokens = login_env
    before = tokens.value()
    browser = Browser()
    assert login(tokens, browser) == 0
    out, err = capfd.readouterr()
    after = tokens.value()
    # A new pair, the client fields kept, the refresh token's birth recorded.
    assert after["refresh_token"] != before["refresh_token"]
    assert after["access_token"] != before["access_token"]
    assert {k: after[k] for k in ("client_id", "client_secret", "token_url", "scope")} == {
        k: before[k] for k in ("client_id", "client_secret", "token_url", "scope")
    }
    assert abs(after["refresh_token_issued_at"] - time.time()) < 60
    assert after["expires_at"] > time.time() + 3000
    assert after["signed_in_as"] == "Sandbox Tester <tester@sandbox.example>"
    # What the engineer sees: who, the scopes, the expiry; never a token, the code, or the client secret.
    assert "Signed in as Sandbox Tester <tester@sandbox.example>" in out
    assert "data:read data:write data:create" in out
    assert "expires" in out
    code = browser.redirects[0].split("code=")[1].split("&")[0]
    for value in (after["access_token"], after["refresh_token"], code, APS_CLIENT[1]):
        assert value not in out + err
    # The pair works: the access token calls APS, and the refresh token refreshes (once).
    client = aps_client(tokens.settings())
    assert client.rfi_container_id(DEMO_HUB, DEMO_PROJECT)
    assert tokens.refresher(always=True).run()["status"] == "refreshed"


def test_the_code_works_once_and_only_with_its_verifier(login_env: Tokens):
    tokens = login_env
    browser = Browser()
    assert login(tokens, browser) == 0
    code = browser.redirects[0].split("code=")[1].split("&")[0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": "x" * 64,
        "redirect_uri": browser.redirects[0].split("?")[0],
        "client_id": APS_CLIENT[0],
        "client_secret": APS_CLIENT[1],
    }
    again = requests.post(f"{tokens.harness.sandbox}/authentication/v2/token", data=form, timeout=10)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def unchanged_after(tokens: Tokens, run: Callable[[], int], capfd: Any, code: str) -> str:
    before = tokens.version()
    calls = tokens.token_calls()
    assert run() == 1
    out, err = capfd.readouterr()
    assert f"aps-login failed: {code}" in err, err
    assert tokens.version() == before  # not even a new version with the same value
    if code not in ("TokenEndpointError", "invalid_grant", "invalid_client"):
        assert tokens.token_calls() == calls
    secret = json.loads(before[1])
    assert secret["refresh_token"] not in out + err
    return str(err)


def test_denied_consent_is_named_and_writes_nothing(login_env: Tokens, capfd):
    login_env.harness.admin("PUT", "config", {"aps_consent": "deny"})
    unchanged_after(login_env, lambda: login(login_env, Browser()), capfd, "ConsentDenied")


def test_a_state_mismatch_is_named_and_writes_nothing(login_env: Tokens, capfd):
    def forge(location: str) -> str:
        head, _, _ = location.rpartition("state=")  # the sandbox puts the state last
        return head + "state=forged"

    unchanged_after(login_env, lambda: login(login_env, Browser(forge)), capfd, "StateMismatch")


def test_a_timeout_is_named_and_writes_nothing(login_env: Tokens, capfd):
    started = time.monotonic()
    unchanged_after(login_env, lambda: login(login_env, lambda url: None, "--timeout", "1"), capfd, "LoginTimeout")
    assert time.monotonic() - started < 10


def test_a_taken_port_is_named_and_writes_nothing(login_env: Tokens, capfd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        unchanged_after(login_env, lambda: login(login_env, Browser(), port=port), capfd, "CallbackPortInUse")


def test_a_missing_secret_is_named(login_env: Tokens, capfd):
    argv = ["aps-login", "--secret-id", "no-such-stack/aps", "--api-url", login_env.harness.sandbox, "--no-browser"]
    err = unchanged_after(login_env, lambda: main(argv, opener=lambda url: None), capfd, "ConfigurationError")
    assert "does not exist" in err


def test_a_token_endpoint_4xx_is_named_and_writes_nothing(login_env: Tokens, capfd):
    login_env.harness.fault("aps.token", fail_next=[{"status": 400, "code": "invalid_grant"}])
    unchanged_after(login_env, lambda: login(login_env, Browser()), capfd, "invalid_grant")


# -- the refresher ----------------------------------------------------------------------------------------


def test_50_concurrent_refreshers_make_exactly_one_token_call(tokens: Tokens):
    old = tokens.signed_in(expires_in=60)  # about to expire: inside every run's margin
    runners = [tokens.refresher() for _ in range(50)]
    start = threading.Barrier(50)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    calls = tokens.token_calls()

    def run(refresher: ApsTokenRefresher) -> None:
        start.wait()
        try:
            results.append(refresher.run())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert tokens.token_calls() - calls == 1
    statuses = [r["status"] for r in results]
    assert statuses.count("refreshed") == 1
    assert set(statuses) <= {"refreshed", "busy", "fresh"}  # 0 invalid_grant: nobody presented a spent token
    new = tokens.value()
    assert new["refresh_token"] != old["refresh_token"]
    assert new["expires_at"] > time.time() + 3000
    assert aps_client(tokens.settings()).rfi_container_id(DEMO_HUB, DEMO_PROJECT)  # the new access token works
    assert tokens.refresher(always=True).run()["status"] == "refreshed"  # and so does the new refresh token


class KilledBeforeWrite:
    """Secrets Manager, but the process dies as the new pair is about to be written."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def put_secret_value(self, **kwargs: Any) -> Any:
        raise Killed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_refresher_killed_before_the_write_reports_login_required_not_a_crash_loop(tokens: Tokens):
    tokens.signed_in(expires_in=60)
    calls = tokens.token_calls()
    sm = boto3.session.Session().client("secretsmanager", endpoint_url=tokens.harness.stack.moto_url)
    with pytest.raises(Killed):
        tokens.refresher(secrets_client=KilledBeforeWrite(sm)).run()
    assert tokens.token_calls() - calls == 1  # the endpoint answered (and killed the old refresh token)
    # The next scheduled run (10 min later; the dead run's lease has expired by then).
    later = lambda: time.time() + 600  # noqa: E731
    metrics = Recorder()
    answer = tokens.refresher(clock=later, metrics=metrics).run()
    assert answer["status"] == "login_required"
    assert answer["error"] == "ApsLoginRequired"
    assert metrics.names == ["ApsLoginRequired"]
    assert tokens.token_calls() - calls == 2  # one try with the dead token: invalid_grant
    # And every run after: the alarm's metric again, no call, no exception.
    for _ in range(3):
        assert tokens.refresher(clock=later, metrics=metrics).run()["status"] == "login_required"
    assert tokens.token_calls() - calls == 2
    assert metrics.names == ["ApsLoginRequired"] * 4


def test_the_sample_event_through_the_docker_free_invoke(tokens: Tokens):
    tokens.signed_in(expires_in=60)
    event = load_event("schedule-aps-token-refresh.json")
    log = io.StringIO()
    assert invoke(tokens.harness.stack, FUNCTION, event, log=log)["status"] == "refreshed"
    assert invoke(tokens.harness.stack, FUNCTION, event, log=log)["status"] == "fresh"
    text = log.getvalue()
    assert "ApsTokenRefreshed" in text  # the EMF metric, as CloudWatch receives it
    secret = tokens.value()
    assert secret["access_token"] not in text
    assert secret["refresh_token"] not in text


# -- handlers only read ---------------------------------------------------------------------------------


def counting_provider(calls: list[str]) -> SecretsProvider:
    client = boto3.client("secretsmanager")
    client.meta.events.register("before-call.secrets-manager", lambda **kw: calls.append(kw["model"].name))
    return SecretsProvider(boto3_client=client)


def test_a_handler_that_gets_401_rereads_once_and_succeeds_with_the_new_token(tokens: Tokens):
    assert tokens.refresher(always=True).run()["status"] == "refreshed"
    reads: list[str] = []
    client = aps_client(tokens.settings(), provider=counting_provider(reads))
    assert client.rfi_container_id(DEMO_HUB, DEMO_PROJECT)  # warm: the token is cached
    first = tokens.value()["access_token"]
    assert tokens.refresher(always=True).run()["status"] == "refreshed"  # the refresher writes a new pair
    tokens.harness.admin("POST", "tokens/revoke", {"token": first})  # the cached one stops working
    reads.clear()
    calls = tokens.token_calls()
    assert client.rfi_container_id(DEMO_HUB, DEMO_PROJECT)
    assert reads == ["GetSecretValue"]  # one re-read, forced past the cache
    assert tokens.token_calls() == calls  # and no refresh: handlers never spend the refresh token


def test_a_warm_handler_makes_no_token_calls_and_no_secret_reads(tokens: Tokens):
    assert tokens.refresher(always=True).run()["status"] == "refreshed"
    reads: list[str] = []
    client = aps_client(tokens.settings(), provider=counting_provider(reads))
    client.rfi_container_id(DEMO_HUB, DEMO_PROJECT)  # cold: one secret read
    reads.clear()
    calls = tokens.token_calls()
    for _ in range(5):
        client.top_folders(DEMO_HUB, DEMO_PROJECT)
    assert tokens.token_calls() == calls
    assert reads == []


def test_an_expired_token_in_the_secret_is_login_required_in_a_handler_never_a_refresh(tokens: Tokens):
    from relay.errors import ApsLoginRequiredError

    tokens.signed_in(expires_in=-10)
    calls = tokens.token_calls()
    with pytest.raises(ApsLoginRequiredError) as info:
        aps_client(tokens.settings()).rfi_container_id(DEMO_HUB, DEMO_PROJECT)
    assert info.value.outcome == "retry"
    assert tokens.token_calls() == calls


def test_the_devstack_invoke_command_runs_the_sample(tokens: Tokens, tmp_path, capsys):
    from devstack.__main__ import invoke_file
    from tests.conftest import EVENTS

    tokens.signed_in(expires_in=60)
    log_file = tmp_path / "refresher.log"
    assert invoke_file(tokens.harness.stack, FUNCTION, EVENTS / "schedule-aps-token-refresh.json", log_file, False) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "refreshed"
    assert f"function logs: {log_file}" in err
    secret = tokens.value()
    assert secret["refresh_token"] not in out + err + log_file.read_text()


def test_an_idle_connection_to_the_callback_does_not_hold_up_the_sign_in(login_env: Tokens, capfd):
    """Browsers open spare connections they never use; the one-at-a-time callback server must not wait on them."""
    from urllib.parse import parse_qs, urlsplit

    spare: list[socket.socket] = []
    browser = Browser()

    def opener(url: str) -> None:
        callback = urlsplit(parse_qs(urlsplit(url).query)["redirect_uri"][0])
        spare.append(socket.create_connection((callback.hostname, callback.port)))  # connects, sends nothing
        browser(url)

    started = time.monotonic()
    try:
        assert login(login_env, opener, "--timeout", "30") == 0
    finally:
        for connection in spare:
            connection.close()
    assert time.monotonic() - started < 15  # the idle connection was dropped, not waited on for the timeout
    assert "Signed in as" in capfd.readouterr().out
