"""Ready-made routes over a :class:`~trio_sse.Broker`: stream, publish, metrics.

Theory of operation: each function returns an ordinary handler
(``async def handler(request)``) to mount with :meth:`App.add_route`, so the
server applies its heartbeats, write-stall timeout, stream lifetime and
shutdown to topic streams exactly as to any other stream. A topic stream is a
:class:`~trio_sse.StreamResponse` whose writer drains the subscription in
batches (:meth:`Subscription.receive_batch`): events that queued up while the
connection was busy leave in one socket write.

Security defaults: a client may only subscribe to topics that already exist
(names it makes up get ``404``, so clients cannot create topics), may name
at most ``max_topics`` topics, and publishing has no default authorization:
:func:`publish_endpoint` requires an ``authorize`` callable.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from ._broker import Broker
from ._config import Config
from ._cors import cross_site_refusal
from ._errors import BackplaneUnavailableError
from ._event import Event
from ._http import Handler, HTTPException, Response, StreamResponse
from ._request import Request
from ._topic import Topic
from ._topic_writer import TopicWriter

__all__ = ["health_endpoint", "metrics_endpoint", "publish_endpoint", "topic_stream"]

TopicSelector: TypeAlias = Sequence[str] | Callable[[Request], Sequence[str]] | None
Authorize: TypeAlias = Callable[[Request, Sequence[str]], "bool | Awaitable[bool]"]
PublishAuthorize: TypeAlias = Callable[[Request, str], "bool | Awaitable[bool]"]


async def _allowed(result: bool | Awaitable[bool]) -> bool:
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def _requested_topics(request: Request, query_param: str) -> list[str]:
    name = request.path_params.get("topic")
    if name is not None:
        return [name]
    names: list[str] = []
    for value in request.query.get(query_param, []):
        names.extend(part for part in value.split(",") if part)
    return list(dict.fromkeys(names))


def topic_stream(
    broker: Broker,
    topics: TopicSelector = None,
    *,
    query_param: str = "topic",
    max_topics: int = 8,
    max_batch: int = 64,
    authorize: Authorize | None = None,
    expires_at: Callable[[Request], float | None] | None = None,
) -> Handler:
    """A route handler streaming one or several topics to each client.

    Topics come from, in order: *topics* (a fixed list, or a callable that
    picks them from the request); the route's ``{topic}`` path parameter; the
    *query_param* query parameter, repeated or comma-separated
    (``/events?topic=prices,news``). Names chosen by the client must exist in
    the broker (``404`` otherwise).

    The resume point is ``request.last_event_id``: the ``Last-Event-ID``
    header, else the ``lastEventId`` query parameter. One topic streams the
    topic's own ids; several stream composite cursors
    (:meth:`Broker.subscribe_many`) that resume every topic exactly. A fresh
    subscriber first receives an id-only event carrying its starting
    position, so that even a client that disconnects before the first event
    resumes without a gap.

    Args:
        broker: the broker to subscribe to.
        topics: fixed topics, or ``request -> topics``; ``None`` lets the
            client choose among existing topics.
        query_param: the query parameter naming topics.
        max_topics: the most topics one stream may carry (``400`` beyond).
        max_batch: the most queued events sent in one write.
        authorize: optional ``(request, topic_names) -> bool`` (or awaitable);
            ``False`` answers ``403``. It runs on every request, resumes
            included, before any history is replayed, so a client that lost
            a right gets nothing more of that topic.
        expires_at: optional ``request -> Unix time`` (a credential's expiry,
            e.g. :meth:`JWTAuth.expires_at`): the stream ends then with the
            final ``retry:`` event, and the client must authenticate again.

    Returns:
        A handler for :meth:`App.add_route` (``GET``).

    Example::

        app.add_route("/events/{topic}", topic_stream(broker))
        app.add_route("/dashboard", topic_stream(broker, ["prices", "news"]))
    """
    if max_topics < 1 or max_batch < 1:
        raise ValueError("max_topics and max_batch must be at least 1")

    async def handler(request: Request) -> StreamResponse:
        if topics is None:
            names = _requested_topics(request, query_param)
            if not names:
                raise HTTPException(400, f"name at least one topic, e.g. ?{query_param}=NAME")
        else:
            names = list(topics(request) if callable(topics) else topics)
            if not names:
                raise HTTPException(400, "no topic selected")
        if len(names) > max_topics:
            raise HTTPException(400, f"at most {max_topics} topics per stream")
        # Authorize before looking the topics up: a client that may not see
        # a topic must not learn whether it exists (403 either way).
        if authorize is not None and not await _allowed(authorize(request, names)):
            raise HTTPException(403, "not allowed to subscribe to these topics")
        if topics is None:
            unknown = [n for n in names if n not in broker.topics]
            if unknown:
                raise HTTPException(404, f"no such topic: {', '.join(unknown)}")
        last_event_id = request.last_event_id or None
        try:
            if len(names) == 1:
                subscription = broker.subscribe(names[0], last_event_id)
            else:
                subscription = broker.subscribe_many(names, last_event_id)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None

        # A known handler type: the raw server runs it in the connection's
        # own task (``_parked.py``); other servers call it.
        writer = TopicWriter(subscription, max_batch, announce=last_event_id is None)
        return StreamResponse(
            writer, expires_at=expires_at(request) if expires_at is not None else None
        )

    return handler


def _event_from_fields(fields: dict[str, Any], config: Config) -> Event:
    unknown = set(fields) - {"data", "event", "id", "retry", "comment"}
    if unknown:
        raise HTTPException(400, f"unknown event fields: {', '.join(sorted(unknown))}")
    data = fields.get("data")
    if data is not None and not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    retry = fields.get("retry")
    if isinstance(retry, str):
        # ASCII digits only: "²".isdigit() is true, but int("²") fails.
        if not (retry.isascii() and retry.isdigit()):
            raise HTTPException(400, f"retry must be a non-negative integer, got {retry!r}")
        retry = int(retry)
    try:
        event = Event(
            data=data,
            event=fields.get("event"),
            id=fields.get("id"),
            retry=retry,
            comment=fields.get("comment"),
        )
        config.check_event(event)
    except UnicodeError:
        raise HTTPException(400, "event fields must be text without lone surrogates") from None
    except (TypeError, ValueError) as exc:
        raise HTTPException(400, str(exc)) from None
    return event


def publish_endpoint(
    broker: Broker,
    *,
    authorize: PublishAuthorize,
    topic: str | None = None,
    csrf_protection: bool = True,
    allow_simple_cross_origin: bool = False,
) -> Handler:
    """A route handler that publishes the request body as an event.

    The topic is *topic* if given, else the route's ``{topic}`` path
    parameter; it must exist unless the broker creates topics on demand
    (``404``). The body is, by ``Content-Type``:

    * ``application/json``: an object with ``data`` (a string, or any JSON
      value, which is published as its JSON text), and optionally ``event``,
      ``id``, ``retry``, ``comment``;
    * ``application/x-www-form-urlencoded``: the same fields;
    * anything else: the body as UTF-8 text is the ``data``.

    Invalid fields answer ``400`` with the reason, as do an ``id`` longer
    than ``Config.max_event_id_length`` and a ``retry`` over
    ``Config.max_retry``. The response is JSON:
    ``{"topic": ..., "id": ...}`` with the id the topic assigned. While the
    backplane cannot publish (Redis unreachable), the answer is ``503`` with
    ``Retry-After`` and nothing is published.

    Args:
        broker: where to publish.
        authorize: ``(request, topic_name) -> bool`` (or awaitable), called
            before the body is read; ``False`` answers ``403``. Required: pass
            ``lambda request, topic: True`` to allow everyone, deliberately.
        topic: a fixed topic name.
        csrf_protection: refuse cross-site requests with ``403`` before
            ``authorize`` runs (see :func:`~trio_sse.cross_site_refusal`):
            only same-origin requests, non-browser clients, and requests from
            origins the App's :class:`~trio_sse.CORS` allows (with a JSON
            body, which the browser preflights) may publish. Leave it on when
            ``authorize`` checks a cookie.
        allow_simple_cross_origin: also accept form and ``text/plain`` bodies
            from CORS-allowed origins.

    Returns:
        A handler for :meth:`App.add_route` (``methods=["POST"]``).
    """

    async def handler(request: Request) -> dict[str, Any]:
        name = topic if topic is not None else request.path_params.get("topic")
        if not name:
            raise HTTPException(400, "no topic: mount with a {topic} path parameter or topic=")
        if csrf_protection:
            refused = cross_site_refusal(request, allow_simple=allow_simple_cross_origin)
            if refused is not None:
                raise HTTPException(403, refused)
        # Authorize first: the answer must not tell who may not publish
        # whether the topic exists.
        if not await _allowed(authorize(request, name)):
            raise HTTPException(403, f"not allowed to publish to {name}")
        if name not in broker.topics and not broker.create_topics:
            raise HTTPException(404, f"no such topic: {name}")
        config = request.config
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise HTTPException(400, "JSON body must be an object with a 'data' field")
            event = _event_from_fields(body, config)
        elif content_type == "application/x-www-form-urlencoded":
            event = _event_from_fields(dict(await request.form()), config)
        else:
            event = _event_from_fields({"data": await request.text()}, config)
        target: Topic = broker.topic(name)
        try:
            published = await target.publish(event)
        except BackplaneUnavailableError as exc:
            retry_after = getattr(broker.backplane, "retry_after", 1)
            raise HTTPException(503, str(exc), {"Retry-After": str(retry_after)}) from None
        except ValueError as exc:  # e.g. an id where the backplane assigns ids
            raise HTTPException(400, str(exc)) from None
        return {"topic": name, "id": published.id}

    return handler


def metrics_endpoint(broker: Broker, *, namespace: str = "trio_sse") -> Handler:
    """A route handler serving the broker's metrics in Prometheus text format.

    Needs ``prometheus-client`` (``pip install trio-sse[prometheus]``). Also
    reports the App's refusal counters (:attr:`App.refusals`) as
    ``<namespace>_refusals_total{reason=...}``.

    Args:
        broker: the broker to report on.
        namespace: the metric name prefix.
    """
    from ._metrics import METRICS_CONTENT_TYPE, broker_metrics_text

    async def handler(request: Request) -> Response:
        return Response(
            broker_metrics_text(broker, namespace=namespace, refusals=request.app.refusals),
            media_type=METRICS_CONTENT_TYPE,
        )

    return handler


def health_endpoint(broker: Broker) -> Handler:
    """A readiness check: ``200`` while the broker can publish, else ``503``.

    With the in-process backplane it always answers ``200``. With
    :class:`~trio_sse.RedisBackplane` it answers ``503`` (with
    ``Retry-After``) while Redis is unreachable, so a load balancer stops
    sending publishers and new subscribers to a process that would fail them.
    The JSON body carries the backplane's stats.

    Args:
        broker: the broker to report on.

    Returns:
        A handler for :meth:`App.add_route` (``GET``).
    """

    async def handler(request: Request) -> Response:
        backplane = broker.backplane
        stats_fn = getattr(backplane, "stats", None)
        body: dict[str, Any] = {"status": "ok", "topics": len(broker.topics)}
        status = 200
        headers: dict[str, str] = {}
        if stats_fn is not None:
            stats = stats_fn()
            body["backplane"] = {
                field: getattr(stats, field) for field in type(stats).__dataclass_fields__
            }
            if not stats.connected:
                status = 503
                body["status"] = "unavailable"
                headers["Retry-After"] = str(getattr(backplane, "retry_after", 1))
        return Response(
            json.dumps(body, separators=(",", ":")),
            status=status,
            headers=headers,
            media_type="application/json",
        )

    return handler
