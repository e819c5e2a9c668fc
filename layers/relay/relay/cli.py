"""The relay's command line: `python -m relay.cli aps-login` signs an APS user in once, from a laptop."""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from relay import constants as c
from relay.errors import ConfigurationError, RelayError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m relay.cli", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    login = sub.add_parser(
        "aps-login",
        help="sign an Autodesk user in (three-legged OAuth with PKCE) and write the token pair into the APS secret",
        description="Starts a loopback server for the callback, prints the authorize URL (and opens a browser), "
        "exchanges the code and writes access_token, refresh_token and expires_at into the secret as a new "
        "version, keeping its client fields. Run it once, and again when ApsLoginRequiredAlarm fires.",
    )
    login.add_argument(
        "--secret-id",
        default=os.environ.get(c.APS_SECRET_ID_ENV),
        help=f"the APS secret (<stack>/aps); default ${c.APS_SECRET_ID_ENV}",
    )
    login.add_argument(
        "--redirect-uri",
        default=c.DEFAULT_APS_REDIRECT_URI,
        help="a callback URL registered on the APS app, on this machine (default %(default)s)",
    )
    login.add_argument(
        "--timeout", type=float, default=c.DEFAULT_APS_LOGIN_TIMEOUT, help="seconds to wait for the callback (300)"
    )
    login.add_argument(
        "--scope", help="scopes to ask for (default: the secret's scope, or data:read data:write data:create)"
    )
    login.add_argument(
        "--api-url",
        default=os.environ.get(c.APS_API_URL_ENV) or c.DEFAULT_APS_API_URL,
        help=f"APS base URL (default ${c.APS_API_URL_ENV} or %(default)s)",
    )
    login.add_argument(
        "--userinfo-url", default=c.DEFAULT_APS_USERINFO_URL, help="OpenID userinfo, to say who signed in"
    )
    login.add_argument("--no-browser", action="store_true", help="only print the URL")
    return top


def run_aps_login(
    args: argparse.Namespace,
    *,
    out: TextIO,
    secrets_client: Any = None,
    opener: Callable[[str], object] | None = None,
) -> None:
    import boto3

    from relay.auth.login import LoginOptions, aps_login
    from relay.settings import Settings
    from relay.vendors.factory import token_endpoint

    if not args.secret_id:
        raise ConfigurationError(f"pass --secret-id or set {c.APS_SECRET_ID_ENV}")
    settings = Settings.load(aps_api_url=args.api_url)
    options = LoginOptions(
        secret_id=args.secret_id,
        api_url=settings.aps_api_url,
        redirect_uri=args.redirect_uri,
        scope=args.scope,
        timeout=args.timeout,
        userinfo_url=args.userinfo_url,
    )
    browser: Callable[[str], object] = (lambda url: None) if args.no_browser else webbrowser.open
    aps_login(
        options,
        secrets_client=secrets_client or boto3.client("secretsmanager"),
        endpoint=token_endpoint(settings, c.DEFAULT_APS_TOKEN_URL),
        opener=opener or browser,
        out=out,
    )


def main(argv: Sequence[str] | None = None, **injected: Any) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "aps-login":
            run_aps_login(args, out=sys.stdout, **injected)
    except RelayError as error:
        print(f"aps-login failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aps-login interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
