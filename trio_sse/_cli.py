"""The ``trio-sse`` command line: ``serve MODULE:APP`` and ``demo``.

Signals: SIGINT and SIGTERM start a graceful shutdown (streams end with a
``retry:`` hint, in-flight requests get ``shutdown_grace_period``); a second
signal during shutdown exits at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from functools import partial
from typing import Any

import trio

from ._app import App
from ._config import Config
from ._server import serve
from ._version import __version__

__all__ = ["load_app", "main", "run"]

logger = logging.getLogger("trio_sse")


def load_app(spec: str) -> App:
    """Import ``MODULE:ATTRIBUTE`` and return the :class:`App` it names.

    Raises:
        SystemExit: with a message saying what is wrong with ``spec``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"trio-sse: expected MODULE:APP (e.g. myproject.web:app), got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"trio-sse: cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(
                f"trio-sse: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not isinstance(obj, App):
        raise SystemExit(f"trio-sse: {spec} is a {type(obj).__name__}, not a trio_sse.App")
    return obj


async def run(
    app: App,
    host: str | None,
    port: int,
    config: Config,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (or cancellation), then shut down gracefully.

    A second signal during the shutdown exits the process at once.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as watchers:
            serving = trio.CancelScope()
            watchers.start_soon(_watch_signals, signals, serving, config)
            with serving:
                async with trio.open_nursery() as server:
                    listeners = await server.start(partial(serve, app, host, port, config=config))
                    for listener in listeners:
                        addr = listener.socket.getsockname()
                        logger.info("trio-sse serving on http://%s:%s/", _host(addr[0]), addr[1])
                    task_status.started(listeners)
            watchers.cancel_scope.cancel()


async def _watch_signals(signals: Any, serving: trio.CancelScope, config: Config) -> None:
    async for signum in signals:
        if serving.cancel_called:
            logger.warning("second signal: exiting without waiting for connections")
            os._exit(1)
        logger.info(
            "%s: shutting down (grace period %.1f s; again to exit now)",
            signal.Signals(signum).name,
            config.shutdown_grace_period,
        )
        serving.cancel()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits and deadlines (see docs/timeouts-and-limits.md)")
    for f in fields(Config):
        name = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, str):
            group.add_argument(
                name, dest=f.name, default=argparse.SUPPRESS, help=f"(default {default!r})"
            )
            continue
        kind = int if isinstance(default, int) and f.name != "heartbeat_interval" else float
        group.add_argument(
            name,
            dest=f.name,
            type=_optional(kind),
            default=argparse.SUPPRESS,
            metavar="N",
            help=f"(default {default}{'; none disables' if f.name in _NONE_OK else ''})",
        )


_NONE_OK = {
    "heartbeat_interval",
    "max_stream_lifetime",
    "stream_end_retry",
    "backlog",
    "tcp_keepalive_idle",
}


def _optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        if text.lower() in ("none", "off"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None

    return parse


def _build_config(base: Config, args: argparse.Namespace) -> Config:
    # Options default to SUPPRESS: only those given on the command line exist.
    changes = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    try:
        return replace(base, **changes)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"trio-sse: {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sse",
        description="Serve Server-Sent Events with trio-sse.",
    )
    parser.add_argument("--version", action="version", version=f"trio-sse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_serve = sub.add_parser("serve", help="serve an App: trio-sse serve MODULE:APP")
    p_serve.add_argument("app", metavar="MODULE:APP", help="e.g. myproject.web:app")
    p_demo = sub.add_parser("demo", help="serve the demo dashboard")
    for p in (p_serve, p_demo):
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
        p.add_argument(
            "--log-level",
            default="info",
            choices=["debug", "info", "warning", "error"],
            help="logging level (default info)",
        )
        _config_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``trio-sse`` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from .demo import app
    else:
        app = load_app(args.app)
    config = _build_config(app.config, args)
    try:
        trio.run(run, app, args.host, args.port, config)
    except* OSError as group:
        exc = group.exceptions[0]
        raise SystemExit(f"trio-sse: cannot serve on {args.host}:{args.port}: {exc}") from None
