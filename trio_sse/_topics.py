"""Former home of the topics code, now split; re-exports for old imports.

The code lives in :mod:`trio_sse._options`, :mod:`trio_sse._cursor`,
:mod:`trio_sse._history`, :mod:`trio_sse._resume`,
:mod:`trio_sse._subscription`, :mod:`trio_sse._topic` and
:mod:`trio_sse._broker`. Only ``_websocket.py`` still imports from here; once
it imports from those modules, delete this file.
"""

from __future__ import annotations

from ._broker import Broker as Broker
from ._options import OverflowPolicy as OverflowPolicy
from ._options import TopicOptions as TopicOptions
from ._options import TopicStats as TopicStats
from ._subscription import Subscription as Subscription
from ._topic import Topic as Topic

__all__ = ["Broker", "OverflowPolicy", "Subscription", "Topic", "TopicOptions", "TopicStats"]
