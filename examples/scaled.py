"""Topics shared by every process through Redis: run as many as you like.

Each process serves the same routes; a browser may connect to any of them,
and reconnect to any other with ``Last-Event-ID``: ids are Redis stream ids,
the same everywhere. Run two processes on one host::

    TRIO_SSE_REDIS_URL=redis://127.0.0.1:6379 trio-sse serve examples.scaled:app --port 8001
    TRIO_SSE_REDIS_URL=redis://127.0.0.1:6379 trio-sse serve examples.scaled:app --port 8002

or one command with several workers sharing a port (``--workers 2``). Then
``curl -N localhost:8001/events/news`` and, from another shell,
``curl -H 'authorization: Bearer admin-token' -d hello localhost:8002/publish/news``.
"""

from __future__ import annotations

import hmac
import os

from trio_sse import (
    App,
    Broker,
    RedisBackplane,
    Request,
    TopicOptions,
    health_endpoint,
    publish_endpoint,
    run,
    topic_stream,
)

backplane = RedisBackplane(os.environ.get("TRIO_SSE_REDIS_URL", "redis://127.0.0.1:6379"))
broker = Broker(TopicOptions(history_size=1000), backplane=backplane, create_topics=False)
broker.declare("news")
broker.declare("prices")

app = App()
# The backplane's writer and reader run for the life of the app.
app.background(backplane.run)
app.add_route("/events/{topic}", topic_stream(broker))
# 200 while Redis answers, 503 otherwise: point the load balancer's check here.
app.add_route("/health", health_endpoint(broker))

ADMIN_TOKEN = os.environ.get("TRIO_SSE_ADMIN_TOKEN", "admin-token")


def is_admin(request: Request, topic: str) -> bool:
    """Only requests bearing the admin token may publish."""
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {ADMIN_TOKEN}".encode())


# Answers 503 with Retry-After while Redis is unreachable: nothing is published.
app.add_route("/publish/{topic}", publish_endpoint(broker, authorize=is_admin), ["POST"])


if __name__ == "__main__":
    # One process; `trio-sse serve examples.scaled:app --workers 2` runs two.
    run(app, host="127.0.0.1", port=8001)
