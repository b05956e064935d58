"""The ``trio-sse`` command line: ``serve MODULE:APP``, ``demo`` and ``listen URL``.

Signals: SIGINT and SIGTERM start a graceful shutdown (streams end with a
``retry:`` hint, in-flight requests get ``shutdown_grace_period``); a second
signal during shutdown exits at once.

``serve --workers N`` (N > 1) makes this process a supervisor of N workers
(``_workers.py``); each worker is this same command line plus hidden options
naming the sockets it inherits, and serves them with :func:`serve_listeners`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields, replace
from functools import partial
from typing import Any, get_args, get_type_hints

import trio

from ._app import App
from ._config import Config
from ._doctor_cli import add_doctor_parser, doctor
from ._errors import unwrap_groups
from ._listen import add_listen_parser, listen
from ._server import serve, serve_listeners
from ._tls import server_ssl_context
from ._version import __version__
from ._workers import (
    LISTEN_FDS_OPTION,
    PARENT_FD_OPTION,
    Supervisor,
    check_backplanes,
    inherited_listeners,
    watch_parent,
)

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
    await serve_until_signal(
        partial(serve, app, host, port, config=config), config, task_status=task_status
    )


async def serve_until_signal(
    serve_fn: Callable[..., Awaitable[None]],
    config: Config,
    *,
    parent_fd: int | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``await nursery.start(serve_fn)`` until SIGINT or SIGTERM, then cancel it.

    Args:
        serve_fn: :func:`serve` or :func:`serve_listeners` with its arguments
            bound; started with the listeners.
        config: for the log line (the grace period).
        parent_fd: a worker's end of the supervisor's pipe (see
            ``_workers.py``); its end-of-file also starts the shutdown.
        task_status: started with the listeners.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as watchers:
            serving = trio.CancelScope()
            # A worker leaves "exit now" to its supervisor, which kills it: a
            # service manager may signal every process of the group at once,
            # and the supervisor forwards that signal, a second one.
            watchers.start_soon(_watch_signals, signals, serving, config, parent_fd is None)
            if parent_fd is not None:
                watchers.start_soon(watch_parent, parent_fd, serving)
            with serving:
                async with trio.open_nursery() as server:
                    listeners = await server.start(serve_fn)
                    for listener in listeners:
                        addr = listener.socket.getsockname()
                        scheme = "https" if config.certfile else "http"
                        logger.info(
                            "trio-sse serving on %s://%s:%s/", scheme, _host(addr[0]), addr[1]
                        )
                    task_status.started(listeners)
            watchers.cancel_scope.cancel()


async def _watch_signals(
    signals: Any, serving: trio.CancelScope, config: Config, exit_on_second: bool
) -> None:
    async for signum in signals:
        if serving.cancel_called:
            if not exit_on_second:
                logger.info("%s: already shutting down", signal.Signals(signum).name)
                continue
            logger.warning("second signal: exiting without waiting for connections")
            os._exit(1)
        logger.info(
            "%s: shutting down (grace period %.1f s%s)",
            signal.Signals(signum).name,
            config.shutdown_grace_period,
            "; again to exit now" if exit_on_second else "",
        )
        serving.cancel()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits and deadlines (see docs/timeouts-and-limits.md)")
    hints = get_type_hints(Config)
    for f in fields(Config):
        name = "--" + f.name.replace("_", "-")
        kind, none_ok = _option_type(hints[f.name])
        if kind is str:
            group.add_argument(
                name, dest=f.name, default=argparse.SUPPRESS, help=f"(default {f.default!r})"
            )
            continue
        group.add_argument(
            name,
            dest=f.name,
            type=_optional(kind, none_ok),
            default=argparse.SUPPRESS,
            metavar="N",
            help=f"(default {f.default}{'; none disables' if none_ok else ''})",
        )


def _option_type(annotation: Any) -> tuple[type, bool]:
    """``(int | float | str, None allowed)`` from a Config field's annotation.

    The annotation, not the default, decides: ``backlog: int | None = None``
    must parse ``--backlog 128`` as an int.
    """
    members = set(get_args(annotation)) or {annotation}
    none_ok = type(None) in members
    members.discard(type(None))
    for kind in (str, int, float):
        if members == {kind}:
            return kind, none_ok
    raise TypeError(f"no command-line type for Config annotation {annotation!r}")


def _optional(kind: type, none_ok: bool) -> Any:
    expected = "an integer" if kind is int else "a number"
    if none_ok:
        expected += " or 'none'"

    def parse(text: str) -> Any:
        if none_ok and text.lower() in ("none", "off"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


def _build_config(base: Config, args: argparse.Namespace) -> Config:
    # Options default to SUPPRESS: only those given on the command line exist.
    changes = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    try:
        config = replace(base, **changes)
        server_ssl_context(config)  # a certificate that cannot load: one line, now
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"trio-sse: {exc}") from exc
    return config


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
    workers = p_serve.add_argument_group("worker processes (see docs/scaling.md)")
    workers.add_argument(
        "--workers",
        type=_at_least(1),
        default=1,
        metavar="N",
        help="serve with N processes sharing the port (default 1: this process serves)",
    )
    workers.add_argument(
        "--max-worker-failures",
        type=_at_least(1),
        default=5,
        metavar="K",
        help="give up when a worker ends K times in a row within 10 s of starting (default 5)",
    )
    workers.add_argument(
        "--worker-kill-margin",
        type=_non_negative,
        default=5.0,
        metavar="S",
        help="at shutdown, kill workers still running after shutdown-grace-period + "
        "close-linger + S seconds (default 5)",
    )
    # Set by the supervisor on the command lines of its workers.
    p_serve.add_argument(LISTEN_FDS_OPTION, dest="listen_fds", help=argparse.SUPPRESS)
    p_serve.add_argument(PARENT_FD_OPTION, dest="parent_fd", type=int, help=argparse.SUPPRESS)
    for p in (p_serve, p_demo):
        _config_arguments(p)
    add_listen_parser(sub)
    add_doctor_parser(sub)
    return parser


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``trio-sse`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "listen":
        raise SystemExit(listen(args))
    if args.command == "doctor":
        raise SystemExit(doctor(args))
    several = args.command == "serve" and (args.workers > 1 or args.listen_fds is not None)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s " + ("[%(process)d] " if several else "") + "%(levelname)s "
        "%(name)s: %(message)s",
    )
    if args.command == "demo":
        from .demo import app
    else:
        app = load_app(args.app)
    config = _build_config(app.config, args)
    if args.command == "serve" and args.listen_fds is not None:
        fds = [int(fd) for fd in args.listen_fds.split(",")]
        trio.run(_run_worker, app, config, fds, args.parent_fd)
        return
    try:
        if args.command == "serve" and args.workers > 1:
            check_backplanes(args.workers)
            supervisor = Supervisor(
                argv,
                args.workers,
                config,
                max_failures=args.max_worker_failures,
                kill_margin=args.worker_kill_margin,
            )
            trio.run(supervisor.run, args.host, args.port)
            if supervisor.failure is not None:
                raise SystemExit(supervisor.failure)
        else:
            with unwrap_groups():
                trio.run(run, app, args.host, args.port, config)
    except OSError as exc:
        raise SystemExit(f"trio-sse: cannot serve on {args.host}:{args.port}: {exc}") from None


async def _run_worker(app: App, config: Config, fds: list[int], parent_fd: int | None) -> None:
    """A worker's main: serve the inherited sockets until a signal or orphaned."""
    listeners = inherited_listeners(fds)
    if parent_fd is not None:
        # Before the app runs: processes it starts must not keep the pipe open.
        os.set_inheritable(parent_fd, False)
    await serve_until_signal(
        partial(serve_listeners, app, listeners, config=config), config, parent_fd=parent_fd
    )
