"""trio-sse: a Trio-native, structured-concurrency framework for Server-Sent Events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._app import App as App
from ._auth import JWTAuth as JWTAuth
from ._auth import bearer_token as bearer_token
from ._auth import cookie_value as cookie_value
from ._auth import query_token as query_token
from ._auth import secret_matches as secret_matches
from ._backplane import Backplane as Backplane
from ._backplane import LocalBackplane as LocalBackplane
from ._backplane import RemoteHistory as RemoteHistory
from ._broker import Broker as Broker
from ._codec import DEFAULT_MAX_EVENT_SIZE as DEFAULT_MAX_EVENT_SIZE
from ._codec import Decoder as Decoder
from ._codec import MessageEvent as MessageEvent
from ._config import Config as Config
from ._cors import CORS as CORS
from ._cors import cross_site_refusal as cross_site_refusal
from ._doctor import Finding as Finding
from ._doctor import Report as Report
from ._doctor import diagnose as diagnose
from ._doctor import diagnostics_stream as diagnostics_stream
from ._errors import BackplaneUnavailableError as BackplaneUnavailableError
from ._errors import EventFieldTypeError as EventFieldTypeError
from ._errors import EventSourceConnectionError as EventSourceConnectionError
from ._errors import EventSourceError as EventSourceError
from ._errors import EventSourceResponseError as EventSourceResponseError
from ._errors import EventTooLargeError as EventTooLargeError
from ._errors import InvalidEventError as InvalidEventError
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._errors import SSEError as SSEError
from ._event import Event as Event
from ._http import EventStream as EventStream
from ._http import Handler as Handler
from ._http import HeaderList as HeaderList
from ._http import HTMLResponse as HTMLResponse
from ._http import HTTPException as HTTPException
from ._http import JSONResponse as JSONResponse
from ._http import Lifespan as Lifespan
from ._http import PlainTextResponse as PlainTextResponse
from ._http import Response as Response
from ._http import StreamHandler as StreamHandler
from ._http import StreamResponse as StreamResponse
from ._http import WebSocketHandler as WebSocketHandler
from ._limits import ClientLimits as ClientLimits
from ._memory import release_memory as release_memory
from ._metrics import METRICS_CONTENT_TYPE as METRICS_CONTENT_TYPE
from ._metrics import BrokerCollector as BrokerCollector
from ._metrics import broker_metrics_text as broker_metrics_text
from ._options import EndReason as EndReason
from ._options import OverflowPolicy as OverflowPolicy
from ._options import PolicyName as PolicyName
from ._options import TopicOptions as TopicOptions
from ._options import TopicStats as TopicStats
from ._redis import BackplaneStats as BackplaneStats
from ._redis import RedisBackplane as RedisBackplane
from ._request import Headers as Headers
from ._request import Request as Request
from ._routes import Authorize as Authorize
from ._routes import PublishAuthorize as PublishAuthorize
from ._routes import TopicSelector as TopicSelector
from ._routes import health_endpoint as health_endpoint
from ._routes import metrics_endpoint as metrics_endpoint
from ._routes import publish_endpoint as publish_endpoint
from ._routes import topic_stream as topic_stream
from ._run import run as run
from ._server import serve as serve
from ._server import serve_listeners as serve_listeners
from ._subscription import Subscription as Subscription
from ._topic import Topic as Topic
from ._version import __version__ as __version__
from ._websocket import CLOSE_EVICTED as CLOSE_EVICTED
from ._websocket import CLOSE_GOING_AWAY as CLOSE_GOING_AWAY
from ._websocket import CLOSE_INTERNAL_ERROR as CLOSE_INTERNAL_ERROR
from ._websocket import CLOSE_NORMAL as CLOSE_NORMAL
from ._websocket import CLOSE_POLICY_VIOLATION as CLOSE_POLICY_VIOLATION
from ._websocket import WebSocket as WebSocket
from ._websocket import WebSocketClosed as WebSocketClosed
from ._websocket_topics import topic_websocket as topic_websocket

if TYPE_CHECKING:
    from ._client import EventSource as EventSource
    from ._client import OnOpen as OnOpen
    from ._client import OnReconnect as OnReconnect
    from ._client import ReadyState as ReadyState
    from ._client import open_event_source as open_event_source

#: Names of the client (``trio-sse[client]``), imported on first use so that
#: the server side does not need httpx.
_CLIENT_NAMES = frozenset(
    {"EventSource", "OnOpen", "OnReconnect", "ReadyState", "open_event_source"}
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        try:
            from . import _client
        except ImportError as exc:  # pragma: no cover - httpx is a test dependency
            raise ImportError(
                f"trio_sse.{name} needs httpx: pip install 'trio-sse[client]' ({exc})"
            ) from exc
        return getattr(_client, name)
    raise AttributeError(f"module 'trio_sse' has no attribute {name!r}")


__all__ = [
    "CLOSE_EVICTED",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CORS",
    "DEFAULT_MAX_EVENT_SIZE",
    "METRICS_CONTENT_TYPE",
    "App",
    "Authorize",
    "Backplane",
    "BackplaneStats",
    "BackplaneUnavailableError",
    "Broker",
    "BrokerCollector",
    "ClientLimits",
    "Config",
    "Decoder",
    "EndReason",
    "Event",
    "EventFieldTypeError",
    "EventSource",
    "EventSourceConnectionError",
    "EventSourceError",
    "EventSourceResponseError",
    "EventStream",
    "EventTooLargeError",
    "Finding",
    "HTMLResponse",
    "HTTPException",
    "Handler",
    "HeaderList",
    "Headers",
    "InvalidEventError",
    "JSONResponse",
    "JWTAuth",
    "Lifespan",
    "LocalBackplane",
    "LocalProtocolError",
    "MessageEvent",
    "OnOpen",
    "OnReconnect",
    "OverflowPolicy",
    "PlainTextResponse",
    "PolicyName",
    "ProtocolError",
    "PublishAuthorize",
    "ReadyState",
    "RedisBackplane",
    "RemoteHistory",
    "RemoteProtocolError",
    "Report",
    "Request",
    "Response",
    "SSEError",
    "StreamHandler",
    "StreamResponse",
    "Subscription",
    "Topic",
    "TopicOptions",
    "TopicSelector",
    "TopicStats",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketHandler",
    "__version__",
    "bearer_token",
    "broker_metrics_text",
    "cookie_value",
    "cross_site_refusal",
    "diagnose",
    "diagnostics_stream",
    "health_endpoint",
    "metrics_endpoint",
    "open_event_source",
    "publish_endpoint",
    "query_token",
    "release_memory",
    "run",
    "secret_matches",
    "serve",
    "serve_listeners",
    "topic_stream",
    "topic_websocket",
]
