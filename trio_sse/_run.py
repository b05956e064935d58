"""``trio_sse.run(app)``: serve an App from a script exactly as ``trio-sse serve`` does.

Strategy: this is the command line's single-process path (:func:`._cli.run`:
SIGINT/SIGTERM start a graceful shutdown that ends every stream with a
``retry:`` hint, a second signal exits at once) behind a synchronous entry
point that calls :func:`trio.run`, so that ``python app.py`` and ``trio-sse
serve app:app`` behave the same. Nothing here serves: it only sets up logging
when the program has not, and turns the errors a user can fix (the address is
taken, say) into one line, and an app's error into its own traceback,
instead of exception groups.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from ._app import App
from ._cli import run as _serve_until_signal

__all__ = ["run"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run(
    app: App,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str | None = "info",
) -> None:
    """Serve ``app`` until SIGINT (Ctrl-C) or SIGTERM, then shut down gracefully.

    The synchronous counterpart of ``trio-sse serve MODULE:APP`` for the
    ``if __name__ == "__main__":`` block of a script: it logs the address it
    serves on, ends every stream with a ``retry:`` hint at the first signal
    (in-flight requests get ``Config.shutdown_grace_period``), exits at once
    at a second one, and returns normally after a graceful shutdown. The app
    is served with ``app.config``. Inside a running trio program, use
    :func:`trio_sse.serve` instead.

    Args:
        app: the :class:`App` to serve.
        host: address to bind (``None``: every interface, as
            :func:`trio.open_tcp_listeners` understands it).
        port: TCP port (``0``: any free port; the log line names it).
        log_level: level of the ``logging`` set-up done when the program has
            configured none (``"debug"``, ``"info"``, ``"warning"``,
            ``"error"``); ``None`` leaves logging alone.

    Raises:
        SystemExit: with a one-line message when the address cannot be
            served (in use, not an address of this host, no permission).
        Exception: an error of the app (a background task's, the
            lifespan's) that stopped the server, itself rather than in the
            exception groups of the nurseries it crossed.
    """
    if log_level is not None and not logging.getLogger().handlers:
        logging.basicConfig(level=getattr(logging, log_level.upper()), format=LOG_FORMAT)
    listening: list[bool] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(_serve_until_signal, app, host, port, app.config))
            listening.append(True)

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) != 1:
            raise
        [error] = leaves
        if isinstance(error, OSError) and not listening:
            raise SystemExit(f"trio-sse: cannot serve on {host}:{port}: {error}") from None
        # One error (a background task's, say): its own traceback, not three
        # nested nursery groups around it.
        raise error from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found
