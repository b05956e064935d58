"""A price ticker: one publisher, any number of browsers, lossless resume.

Run it with ``python3 examples/prices.py`` (or ``trio-sse serve
examples.prices:app``) from the repository root, then open
http://127.0.0.1:8000/events/prices in a browser or with ``curl -N``.
"""

from __future__ import annotations

import json
import random

import trio

from trio_sse import (
    App,
    Broker,
    Event,
    Request,
    TopicOptions,
    bearer_token,
    publish_endpoint,
    run,
    secret_matches,
    topic_stream,
)

# Each subscriber may fall 32 events behind before it is evicted (its browser
# then reconnects and resumes); the topic keeps 1,000 events for resuming.
broker = Broker(TopicOptions(buffer_size=32, history_size=1000), create_topics=False)
broker.declare("prices")

app = App()
app.add_route("/events/{topic}", topic_stream(broker))


def is_admin(request: Request, topic: str) -> bool:
    """Only requests bearing the admin token may publish (compared in constant time)."""
    return secret_matches(bearer_token(request), "admin-token")


app.add_route("/publish/{topic}", publish_endpoint(broker, authorize=is_admin), ["POST"])


@app.background
async def ticker() -> None:
    """Publish a price every half second; the topic assigns the ids."""
    price = 100.0
    while True:
        price = round(price * random.uniform(0.99, 1.01), 2)
        broker.publish_nowait("prices", Event(json.dumps({"AAPL": price}), event="price"))
        await trio.sleep(0.5)


if __name__ == "__main__":
    # Like `trio-sse serve`: Ctrl-C or SIGTERM ends every stream with `retry:`.
    run(app, host="127.0.0.1", port=8000)
