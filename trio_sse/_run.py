"""``trio_sse.run(app)``: serve an App from a script exactly as ``trio-sse serve`` does.

Strategy: this is the command line's single-process path (:func:`._cli.run`:
SIGINT/SIGTERM start a graceful shutdown that ends every stream with a
``retry:`` hint, a second signal exits at once) behind a synchronous entry
point that calls :func:`trio.run`, so that ``python app.py`` and ``trio-sse
serve app:app`` behave the same. Nothing here serves: it only sets up logging
when the program has not, and turns the errors a user can fix (the address is
taken, say) into one line instead of an exception group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from ._app import App
from ._cli import run as _serve_until_signal

__all__ = ["cannot_serve_message", "run"]

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
    """
    if log_level is not None and not logging.getLogger().handlers:
        logging.basicConfig(level=getattr(logging, log_level.upper()), format=LOG_FORMAT)
    with cannot_serve_message(host, port):
        trio.run(_serve_until_signal, app, host, port, app.config)


@contextmanager
def cannot_serve_message(host: str | None, port: int) -> Iterator[None]:
    """Turn an :class:`OSError` from binding into ``SystemExit`` with one line.

    Trio raises the bind error inside an exception group (the server's
    nursery); the user needs only its message.
    """
    try:
        yield
    except* OSError as group:
        exc = group.exceptions[0]
        while isinstance(exc, BaseExceptionGroup):  # nested nurseries
            exc = exc.exceptions[0]
        raise SystemExit(f"trio-sse: cannot serve on {host}:{port}: {exc}") from None
