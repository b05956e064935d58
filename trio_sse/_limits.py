"""Per-client limits: who the client is, how much it holds, what was refused.

Theory of operation: one anonymous client must not take every slot of the
server. :class:`ClientLimits` counts, per client key, the connections and the
event streams it holds, and refuses beyond ``Config.max_connections_per_client``
and ``Config.max_streams_per_client``. Counting is synchronous (no I/O, no
trio): a server acquires before it serves and releases in ``finally``.

Who the client is:

* Rule 1: the peer address of the TCP connection, unless
* Rule 2: the peer is one of ``Config.trusted_proxies`` *and*
  ``Config.client_ip_header`` is set: then the header (``X-Forwarded-For``,
  or RFC 7239 ``Forwarded``) names the client. In an
  ``X-Forwarded-For`` list each proxy appends the address it saw, so the
  client is the right-most address that is not itself a trusted proxy
  (addresses further left were written by the client and prove nothing).
* Rule 3: a trusted proxy without ``client_ip_header`` is not limited per
  client at all (it carries many clients who cannot be told apart).

Connections from a trusted proxy are never limited per client; streams are,
by the forwarded address (Rule 2).

Refusals are counted by reason in :attr:`ClientLimits.refusals`, for metrics.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final, final

from ._config import Config

if TYPE_CHECKING:
    from ._request import Headers

__all__ = ["REFUSAL_REASONS", "ClientLimits"]

#: The keys of :attr:`ClientLimits.refusals`.
REFUSAL_REASONS: Final = (
    "max_connections",
    "max_connections_per_client",
    "max_streams_per_client",
    "refusal_not_awaited",
)


@final
class ClientLimits:
    """Connection and stream counts per client, and refusal counters.

    Args:
        config: supplies the limits and the trusted proxies.
        refusals: the dict to count refusals in (servers pass
            :attr:`App.refusals`, so metrics find them); default a new one.

    Attributes:
        refusals: refusals so far by reason: ``max_connections`` (503, the
            server is full), ``max_connections_per_client`` and
            ``max_streams_per_client`` (429), ``refusal_not_awaited`` (the
            refusal pool was full: the 503/429 was written without lingering
            for the client to read it).

    """

    def __init__(self, config: Config, refusals: dict[str, int] | None = None) -> None:
        self.config = config
        self._proxies = config.proxy_networks()
        self._header = config.client_ip_header.lower()
        self._connections: dict[str, int] = {}
        self._streams: dict[str, int] = {}
        self.refusals = refusals if refusals is not None else dict.fromkeys(REFUSAL_REASONS, 0)
        for reason in REFUSAL_REASONS:
            self.refusals.setdefault(reason, 0)

    def is_trusted_proxy(self, host: str | None) -> bool:
        """Whether ``host`` is one of ``Config.trusted_proxies``."""
        if host is None or not self._proxies:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    def client_key(self, peer: str | None, headers: Headers) -> str | None:
        """The address limits are keyed on (see the module's rules); ``None``: unknown."""
        if not self.is_trusted_proxy(peer):
            return peer
        if not self._header:
            return None  # Rule 3
        values = headers.getall(self._header)
        hops = [a for v in values for h in v.split(",") if (a := _hop_address(h))]
        for hop in reversed(hops):
            if not self.is_trusted_proxy(hop):
                return hop
        return hops[0] if hops else peer

    def acquire_connection(self, peer: str | None) -> bool:
        """Count a new connection from ``peer``; ``False`` (counted as refused) over the limit."""
        if peer is None or self.is_trusted_proxy(peer):
            return True
        held = self._connections.get(peer, 0)
        if held >= self.config.max_connections_per_client:
            self.refusals["max_connections_per_client"] += 1
            return False
        self._connections[peer] = held + 1
        return True

    def release_connection(self, peer: str | None) -> None:
        """Forget one connection counted by :meth:`acquire_connection`."""
        _release(self._connections, peer)

    def acquire_stream(self, key: str | None) -> bool:
        """Count a new stream of client ``key``; ``False`` (and counted) over the limit."""
        if key is None:
            return True
        held = self._streams.get(key, 0)
        if held >= self.config.max_streams_per_client:
            self.refusals["max_streams_per_client"] += 1
            return False
        self._streams[key] = held + 1
        return True

    def release_stream(self, key: str | None) -> None:
        """Forget one stream counted by :meth:`acquire_stream`."""
        _release(self._streams, key)

    def connections_of(self, peer: str) -> int:
        """Connections ``peer`` holds now."""
        return self._connections.get(peer, 0)

    def streams_of(self, key: str) -> int:
        """Streams client ``key`` holds now."""
        return self._streams.get(key, 0)


def _hop_address(hop: str) -> str:
    """The address of one hop: ``X-Forwarded-For`` items, or RFC 7239 ``Forwarded`` ones.

    ``for="[2001:db8::1]:4711";proto=https`` gives ``2001:db8::1``;
    ``192.0.2.1:80`` gives ``192.0.2.1``.
    """
    hop = hop.strip()
    if "=" in hop:  # Forwarded: for=...;by=...
        params = dict(p.strip().partition("=")[::2] for p in hop.split(";"))
        hop = next((v for k, v in params.items() if k.lower() == "for"), "").strip('"')
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


def _release(counts: dict[str, int], key: str | None) -> None:
    if key is None:
        return
    held = counts.get(key, 0)
    if held <= 1:
        counts.pop(key, None)
    else:
        counts[key] = held - 1
