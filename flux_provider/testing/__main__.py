"""Command line: ``python -m flux_provider.testing --port 8765`` serves the fake API.

Once ready it prints two lines::

    FLUX fake API listening on http://127.0.0.1:8765
    AIRFLOW_CONN_FLUX_DEFAULT='{"conn_type": "flux", "host": "http://127.0.0.1:8765", ...}'

(the second can be pasted after ``export``), then serves until SIGINT or SIGTERM and exits 0.
With ``--stdin-control`` it also answers the commands of
:mod:`flux_provider.testing.control` on stdin and stops when stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from .account import DEFAULT_BALANCE, DEFAULT_CREDITS_PER_IMAGE
from .control import READY_PREFIX, connection_line, serve_commands
from .inflight import DEFAULT_RETRY_AFTER
from .loopback import is_loopback_host
from .server import FakeFluxServer
from .shapes import FAILURE_SHAPES, FAKE_TASK_STATUSES, RESULT_SHAPES, FakeTaskStatus


def parse_status_words(text: str) -> dict[FakeTaskStatus, str]:
    """Parse ``running=rendering,success=SUCCEEDED`` into a ``status_words`` mapping.

    Raises:
        argparse.ArgumentTypeError: If an item is not ``<status>=<word>`` with a known status.
    """
    words: dict[FakeTaskStatus, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        status, equals, word = (piece.strip() for piece in item.partition("="))
        if not equals or not word:
            raise argparse.ArgumentTypeError(f"expected <status>=<word>, got {item!r}")
        if status not in FAKE_TASK_STATUSES:
            raise argparse.ArgumentTypeError(
                f"unknown status {status!r}; expected one of {', '.join(FAKE_TASK_STATUSES)}"
            )
        words[status] = word
    return words


def positive_int(text: str) -> int:
    """Parse a whole number >= 1.

    Raises:
        argparse.ArgumentTypeError: Otherwise.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flux_provider.testing",
        description="Serve a fake of the FLUX.2 [max] task API until SIGINT/SIGTERM.",
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
        "--status-words",
        type=parse_status_words,
        default={},
        metavar="STATUS=WORD,...",
        help="words sent instead of pending/running/success/failed, e.g. success=SUCCEEDED",
    )
    parser.add_argument(
        "--result-shape",
        choices=RESULT_SHAPES,
        default="media_urls",
        help="where a successful task puts its image URL (default: media_urls)",
    )
    parser.add_argument(
        "--failure-shape",
        choices=FAILURE_SHAPES,
        default="result",
        help="where a failed task puts its code and reason (default: result)",
    )
    parser.add_argument(
        "--balance", type=float, default=DEFAULT_BALANCE, help="credits the account starts with"
    )
    parser.add_argument(
        "--credits-per-image",
        type=float,
        default=DEFAULT_CREDITS_PER_IMAGE,
        help="what a 1K task costs (2K costs double)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=positive_int,
        default=None,
        metavar="N",
        help="answer a create 429 while N created tasks have not ended, creating and charging "
        "nothing, like the service's per-account limit (default: no limit)",
    )
    parser.add_argument(
        "--rate-limit-retry-after",
        type=float,
        default=DEFAULT_RETRY_AFTER,
        metavar="SECONDS",
        help="Retry-After of that 429 (default: %(default)g)",
    )
    parser.add_argument(
        "--stdin-control",
        action="store_true",
        help="answer 'duration <s>', 'stats' and 'quit' on stdin; stop when stdin closes",
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a --host that is not loopback"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def _print(line: str) -> None:
    print(line, flush=True)


# The control thread uses the raw file descriptors: a daemon thread blocked inside sys.stdin's
# buffered reader can abort the interpreter's shutdown when a signal ends the process.
def _raw_stdin_lines() -> Iterator[str]:
    pending = b""
    while chunk := os.read(0, 4096):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (line.decode(errors="replace") for line in lines)
    if pending:
        yield pending.decode(errors="replace")


def _raw_print(line: str) -> None:
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _control_loop(server: FakeFluxServer, done: threading.Event) -> None:
    try:
        serve_commands(server, _raw_stdin_lines(), _raw_print)
    except OSError:
        pass  # stdout gone: whoever drove us has left
    finally:
        done.set()


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
            status_words=args.status_words,
            result_shape=args.result_shape,
            failure_shape=args.failure_shape,
            balance=args.balance,
            credits_per_image=args.credits_per_image,
            max_in_flight=args.max_in_flight,
            rate_limit_retry_after=args.rate_limit_retry_after,
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
        with contextlib.suppress(OSError):
            _print(READY_PREFIX + server.base_url)
            _print(connection_line(server.airflow_connection_json()))
        if args.stdin_control:
            threading.Thread(
                target=_control_loop, args=(server, stop_requested), daemon=True
            ).start()
        stop_requested.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
