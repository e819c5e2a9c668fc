"""Run the sandbox standalone, seeded with the local stack's demo data: python -m sandbox --port 8900."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading

import requests

from sandbox.seed import seed
from sandbox.server import Sandbox, build_router

ADMIN_API = """\
admin API (JSON in and out, under /__sandbox/; faults never apply to it):
  POST   /__sandbox/clients              {"platform": "itwin"|"aps", "client_id": "..", "client_secret": ".."}
                                         a client that may get tokens -> 201
  POST   /__sandbox/itwin/{issues|forms} {"id": "ISSUE-1"}  an issue or form to attach to -> 201
  POST   /__sandbox/aps/projects         {"hub": "b.hub", "project": "b.proj", "name"?, "container"?, "folder"?}
                                         -> 201 {"name", "container", "folder"}; posting again keeps the ids
  POST   /__sandbox/aps/rfis             {"container": "..", "rfi": "RFI-1"} -> 201
  POST   /__sandbox/aps/refresh-tokens   {"client_id": ".."} -> 201 {"refresh_token"} (the user's consent)
  POST   /__sandbox/tokens/revoke        {"token"?: ".."} -> 204: that access token, or every one
  POST   /__sandbox/faults               {"endpoint": "<endpoint>"|"*", <fault options>} -> 204
  DELETE /__sandbox/faults               -> 204: every fault off
  PUT    /__sandbox/config               {<settings>} -> 204
  GET    /__sandbox/inspect              -> 200: iTwin attachments (size, sha256, uploads), APS items and RFI
                                         attachments, request counts per endpoint, TCP connections accepted
  POST   /__sandbox/webhooks/send        {"url", "secret", "eventType", "content": {..}} -> 200 {"status", "body"}:
                                         one iTwin webhook, signed `Signature: sha256=<hex>`
  POST   /__sandbox/reset                -> 204: state, settings and faults back to empty
  GET    /__sandbox/health               -> 200 {"ok": true}

fault options (POST /__sandbox/faults; they add to what the endpoint has until DELETE /__sandbox/faults):
  rate_limit_per_minute N    429 with retry-after once N calls fell in the last minute
  error_rate P               answer error_status (503) to a fraction P of calls, with retry_after S if set
  latency_ms N               every call waits N ms first
  drop_rate P                reset the connection on a fraction P of calls
  throttle_rate P            429 with retry_after S (1 s if unset) to a fraction P of calls, beside error_rate
  fail_next [entry, ..]      the next calls' fates, in order; an entry with "count": N stands for N calls
    {"status": 503, "code"?, "message"?, "details"?, "retry_after"?}
                             an error in the vendor's body shape (iTwin, APS, or S3 XML for part URLs)
    {"status": 401, "code": "InvalidToken", "echo_authorization": true}
                             the same, its message ending with the request's Authorization header
    {"drop": true}           reset the connection
    add "after_work": true   to an error or a drop: the endpoint runs first (the create is made, the upload
                             completed), then the caller gets the error or the reset instead of its answer
    {"latency_ms": 1500}     this call waits, then is served
    {"status": 201, "headers": {"Location": "http://127.0.0.1:9\\\\@api-host/issues/x"}, "body": ""}
                             a raw answer: this status (default 200), these headers (an object, or
                             [[name, value], ..] to repeat a name) and body (a string as-is, any other JSON
                             value as JSON); the endpoint itself is not called, so nothing is created
                             (add "short_by": N to cut it short, as below)
    {"short_by": 10}         the endpoint's own answer (a create still creates), its Content-Length
                             announcing 10 bytes more than are sent; then the connection closes
    {"drop_after_bytes": 16384}
                             read 16384 bytes of the request body, then reset (a reset mid-upload)

settings (PUT /__sandbox/config):
  max_upload_bytes (31457280), min_part_bytes (5242880), token_lifetime (3600)
  location_base              base of create's Location (null: the request's Host)
  next_link_base             base of a listing's _links.next.href (null: the request's Host)
  part_url_base              base of signeds3upload's part URLs, S3's host on APS (null: the request's Host)
  created_date_time          any JSON value that every listed attachment reports; null: the real time
  aps_user                   {"name", "email", "sub"}: who GET /authentication/v2/authorize signs in, no person
  aps_consent                "allow", or "deny": the authorize endpoint redirects with error=access_denied
"""


def usage() -> str:
    endpoints = sorted({r.endpoint for r in build_router().routes if r.injectable})
    names = "\n".join(f"  {line}" for line in wrap(", ".join(endpoints), 110))
    example = (
        "example:\n  curl -s -X POST localhost:8900/__sandbox/faults -H 'Content-Type: application/json' \\\n"
        '    -d \'{"endpoint": "itwin.issues.create", "fail_next": [{"status": 429, "retry_after": 2, "count": 3}]}\''
    )
    return f"{ADMIN_API}\nendpoints ({{kind}} is issues or forms):\n{names}\n\n{example}\n"


def wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description=__doc__,
        epilog=usage(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port (default: 8900)")
    parser.add_argument("--data-dir", default=None, help="where uploaded files are kept (default: a temp dir)")
    parser.add_argument("--max-upload-bytes", type=int, default=None)
    parser.add_argument(
        "--seed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create the local stack's demo clients, issues, forms and BIM 360 project (default: on)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def listen(args: argparse.Namespace) -> Sandbox | str:
    """The sandbox bound to its port, or the one line that says why it could not be."""
    try:
        return Sandbox(args.host, args.port, args.data_dir, verbose=args.verbose)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "is already in use"
        elif exc.errno == errno.EACCES:
            why = "is not allowed for this user"
        else:
            why = f"cannot be used ({exc.strerror or exc})"
        return f"python -m sandbox: port {args.port} on {args.host} {why}; choose another with --port N (0: any free)"


def banner(sandbox: Sandbox, seeded: bool) -> list[str]:
    url = sandbox.url
    lines = [f"sandbox listening on {url}"]
    if seeded:
        lines += ["seeded with the local stack's demo data (--no-seed starts empty):", *seed(url).summary()]
    else:
        lines += [
            "started empty: add a client and an issue, or restart with --seed:",
            f"  curl -s -X POST {url}/__sandbox/clients -H 'Content-Type: application/json' \\",
            '    -d \'{"platform": "itwin", "client_id": "me", "client_secret": "s3cret"}\'',
            f"  curl -s -X POST {url}/__sandbox/itwin/issues -H 'Content-Type: application/json' \\",
            '    -d \'{"id": "ISSUE-1"}\'',
        ]
    lines.append(
        f"admin API: {url}/__sandbox/ (python -m sandbox --help lists it), e.g. curl -s {url}/__sandbox/inspect"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sandbox = listen(args)
    if isinstance(sandbox, str):
        print(sandbox, file=sys.stderr)
        return 2
    if args.max_upload_bytes:
        sandbox.store.max_upload_bytes = args.max_upload_bytes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sandbox.start()
    try:
        try:
            lines = banner(sandbox, args.seed)
        except requests.RequestException as exc:
            print(f"python -m sandbox: seeding {sandbox.url} failed: {exc}", file=sys.stderr)
            return 1
        print("\n".join(lines), flush=True)
        threading.Event().wait()  # until SIGTERM (SystemExit) or Ctrl-C
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
