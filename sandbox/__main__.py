"""Run the sandbox standalone: python -m sandbox --port 8900."""

from __future__ import annotations

import argparse
import signal
import sys

from sandbox.server import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--data-dir", default=None, help="where uploaded files are kept (default: a temp dir)")
    parser.add_argument("--max-upload-bytes", type=int, default=None)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    sandbox = Sandbox(args.host, args.port, args.data_dir, verbose=args.verbose)
    if args.max_upload_bytes:
        sandbox.store.max_upload_bytes = args.max_upload_bytes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"sandbox listening on {sandbox.url}", flush=True)
    try:
        sandbox.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sandbox.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
