"""Prometheus exposition of broker statistics.

Theory of operation: nothing is counted twice. Topics keep plain integer
counters (see :meth:`trio_sse.Topic.stats`); :class:`BrokerCollector` is a
prometheus-client *custom collector* that reads :meth:`trio_sse.Broker.stats`
each time it is scraped and turns it into metric families labelled by topic.
There are no per-event metric updates on the publish path.

``prometheus-client`` is an optional dependency (the ``trio-sse[prometheus]``
extra), imported only when metrics are first requested.

Cardinality: every topic is a label value. With many short-lived topics (one
per user, say), scrape size grows with them; aggregate in your own collector
if that matters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric

    from ._broker import Broker
    from ._options import TopicStats

__all__ = ["METRICS_CONTENT_TYPE", "BrokerCollector", "broker_metrics_text"]

#: The content type of :func:`broker_metrics_text`'s output (the Prometheus
#: text format, version 0.0.4, which every Prometheus server accepts).
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# (suffix, help, kind, TopicStats field)
_FAMILIES: Final = (
    ("topic_subscribers", "Subscriptions currently receiving the topic.", "gauge", "subscribers"),
    ("topic_published", "Events published to the topic.", "counter", "published"),
    (
        "topic_delivered",
        "Events queued to subscribers (one per event per subscriber).",
        "counter",
        "delivered",
    ),
    ("topic_dropped", "Queued events discarded under drop_oldest.", "counter", "dropped"),
    ("topic_evicted", "Subscribers evicted for falling behind.", "counter", "evicted"),
    ("topic_replayed", "History events replayed to resuming subscribers.", "counter", "replayed"),
    ("topic_resets", "Resumes from an unknown or expired event id.", "counter", "resets"),
    ("topic_history_size", "Events kept in the replay history.", "gauge", "history_size"),
    (
        "topic_max_subscriber_lag",
        "Largest number of events queued for one subscriber.",
        "gauge",
        "max_lag",
    ),
)


# (suffix, help, kind, BackplaneStats field): only for backplanes with stats().
_BACKPLANE_FAMILIES: Final = (
    ("backplane_connected", "1 while the backplane's engine answers.", "gauge", "connected"),
    ("backplane_reconnects", "Connections to the engine lost.", "counter", "reconnects"),
    ("backplane_published", "Events this process published.", "counter", "published"),
    (
        "backplane_publish_errors",
        "Events this process failed to publish.",
        "counter",
        "publish_errors",
    ),
    ("backplane_outbox", "Events waiting for the writer.", "gauge", "outbox"),
    ("backplane_received", "Entries the reader delivered locally.", "counter", "received"),
    ("backplane_malformed", "Entries skipped as not events.", "counter", "malformed"),
    ("backplane_epoch_resets", "Topics whose data the engine lost.", "counter", "epoch_resets"),
    ("backplane_gaps", "Times the reader fell a stream's length behind.", "counter", "gaps"),
    ("backplane_lag_seconds", "Creation-to-delivery time of the newest entry.", "gauge", "lag"),
    (
        "backplane_last_read_age_seconds",
        "Time since the reader last heard from the engine.",
        "gauge",
        "last_read_age",
    ),
)

_MISSING: Final = (
    "trio-sse's Prometheus metrics need the prometheus-client package; "
    "install it with: pip install 'trio-sse[prometheus]'"
)


@final
class BrokerCollector:
    """A prometheus-client collector for a :class:`~trio_sse.Broker`.

    Register it to serve the broker's metrics next to your own::

        from prometheus_client import REGISTRY
        REGISTRY.register(BrokerCollector(broker))

    Metric names are ``<namespace>_topic_subscribers``,
    ``<namespace>_topic_published_total``, ``…_delivered_total``,
    ``…_dropped_total``, ``…_evicted_total``, ``…_replayed_total``,
    ``…_resets_total``, ``…_history_size`` and
    ``…_topic_max_subscriber_lag``, each with a ``topic`` label. With a
    backplane that reports health (:class:`~trio_sse.RedisBackplane`), also
    ``…_backplane_connected``, ``…_backplane_reconnects_total``,
    ``…_backplane_published_total``, ``…_backplane_publish_errors_total``,
    ``…_backplane_outbox``, ``…_backplane_received_total``,
    ``…_backplane_malformed_total``, ``…_backplane_epoch_resets_total``,
    ``…_backplane_gaps_total``, ``…_backplane_lag_seconds`` and
    ``…_backplane_last_read_age_seconds``.

    Args:
        broker: the broker to report on.
        namespace: the metric name prefix.
        refusals: refusal counters to report too (``App.refusals``), as
            ``<namespace>_refusals_total`` with a ``reason`` label.

    Raises:
        ImportError: prometheus-client is not installed (the message names
            the ``trio-sse[prometheus]`` extra).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        namespace: str = "trio_sse",
        refusals: Mapping[str, int] | None = None,
    ) -> None:
        try:
            import prometheus_client.core  # noqa: F401
        except ImportError as exc:
            raise ImportError(_MISSING) from exc
        self._broker = broker
        self._namespace = namespace
        self._refusals = refusals

    def describe(self) -> Iterator[Metric]:
        """Yield the metric families without samples (for registration)."""
        yield from self._families({}, {})
        if hasattr(self._broker.backplane, "stats"):
            yield from self._backplane_families(None)

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families with one sample per topic."""
        yield from self._families(self._broker.stats(), self._refusals)
        stats = getattr(self._broker.backplane, "stats", None)
        if stats is not None:
            yield from self._backplane_families(stats())

    def _family(
        self, suffix: str, help_text: str, kind: str, labels: list[str]
    ) -> CounterMetricFamily | GaugeMetricFamily:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        factory = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        return factory(f"{self._namespace}_{suffix}", help_text, labels=labels)

    def _backplane_families(self, stats: object) -> Iterator[Metric]:
        for suffix, help_text, kind, field in _BACKPLANE_FAMILIES:
            family = self._family(suffix, help_text, kind, [])
            value = None if stats is None else getattr(stats, field)
            if value is not None:
                family.add_metric([], float(value))
            yield family

    def _families(
        self, stats: dict[str, TopicStats], refusals: Mapping[str, int] | None
    ) -> Iterator[Metric]:
        if refusals is not None:
            refused = self._family(
                "refusals",
                "Connections and requests refused by the edge limits, by reason.",
                "counter",
                ["reason"],
            )
            for reason, count in refusals.items():
                refused.add_metric([reason], count)
            yield refused
        for suffix, help_text, kind, field in _FAMILIES:
            family = self._family(suffix, help_text, kind, ["topic"])
            for topic, topic_stats in stats.items():
                family.add_metric([topic], getattr(topic_stats, field))
            yield family


def broker_metrics_text(
    broker: Broker, *, namespace: str = "trio_sse", refusals: Mapping[str, int] | None = None
) -> bytes:
    """Render *broker*'s per-topic metrics in the Prometheus text format.

    Serve the result with the content type :data:`METRICS_CONTENT_TYPE`.

    Args:
        broker: the broker to report on.
        namespace: the metric name prefix.
        refusals: also report these refusal counters (``App.refusals``) as
            ``<namespace>_refusals_total{reason=...}``.

    Returns:
        The exposition, UTF-8 encoded.

    Raises:
        ImportError: prometheus-client is not installed (the message names
            the ``trio-sse[prometheus]`` extra).
    """
    collector = BrokerCollector(broker, namespace=namespace, refusals=refusals)
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
