"""Command line: ``python -m flux_provider.testing --port 8765`` serves the fake API.

Prints ``FLUX fake API listening on <base_url>`` once ready, then serves until SIGINT or
SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .loopback import is_loopback_host
from .server import FakeFluxServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flux_provider.testing",
        description="Serve a fake of the FLUX task API until SIGINT/SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--api-key", default="fake-key", help="key clients must send")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds each task takes")
    parser.add_argument(
        "--auth-header",
        default="x-api-key",
        help="'x-api-key' (raw key) or 'Authorization' ('Bearer <key>')",
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a --host that is not loopback"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake API server; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not is_loopback_host(args.host) and not args.allow_remote:
        parser.error(f"--host {args.host} is not a loopback address; add --allow-remote to use it")
    try:
        server = FakeFluxServer(
            api_key=args.api_key,
            host=args.host,
            port=args.port,
            duration=args.duration,
            auth_header=args.auth_header,
            verbose=args.verbose,
        )
    except ValueError as exc:
        parser.error(str(exc))
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"FLUX fake API listening on {server.base_url}", flush=True)
        stop_requested.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
