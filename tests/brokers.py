"""Brokers for tests that assert exact ids.

The default backplane prefixes every id with a per-run epoch
(``3f9a0c1e-1``); tests that compare ids with literals use bare numbers.
The epoch itself is tested in test_topics_epochs.py.
"""

from __future__ import annotations

from typing import Any

from trio_sse import Broker, LocalBackplane


def make_broker(*args: Any, **kwargs: Any) -> Broker:
    """``Broker(...)`` whose ids are ``1``, ``2``, ... unless a backplane is given."""
    kwargs.setdefault("backplane", LocalBackplane(id_prefix=""))
    return Broker(*args, **kwargs)
