"""trio-sse: a Trio-native, structured-concurrency framework for Server-Sent Events."""

from __future__ import annotations

from ._codec import DEFAULT_MAX_EVENT_SIZE as DEFAULT_MAX_EVENT_SIZE
from ._codec import Decoder as Decoder
from ._codec import MessageEvent as MessageEvent
from ._errors import EventTooLargeError as EventTooLargeError
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._errors import SSEError as SSEError
from ._event import Event as Event
from ._version import __version__ as __version__

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "Decoder",
    "Event",
    "EventTooLargeError",
    "LocalProtocolError",
    "MessageEvent",
    "ProtocolError",
    "RemoteProtocolError",
    "SSEError",
    "__version__",
]
