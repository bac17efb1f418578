"""The client's address behind load balancers: `X-Forwarded-For` is believed only from configured proxies.

Anyone can send an `X-Forwarded-For` header; believing it from the open internet lets a client choose the
address written in the audit trail and the rate limits. So the header is read right to left, each hop
only while the address that handed it to us is one of `YUNTING_TRUSTED_PROXIES`; the first untrusted
address is the client. Without trusted proxies the socket's peer is the client, header or not.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def parse_networks(spec: str) -> tuple[Network, ...]:
    """`"10.0.0.0/8, 192.0.2.7"` → networks; a bad entry raises ValueError (settings are checked at start)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())


def in_networks(address: str | None, networks: tuple[Network, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks if network.version == ip.version)


def peer_address(conn: HTTPConnection) -> str | None:
    """The address of the socket's other end (a proxy, when there is one)."""
    return conn.client.host if conn.client else None


def client_address(conn: HTTPConnection) -> str | None:
    """The customer's or agent's address: the peer, or what trusted proxies say they received it from."""
    peer = peer_address(conn)
    trusted = parse_networks(conn.app.state.settings.trusted_proxies)
    if not in_networks(peer, trusted):
        return peer
    hops = [hop.strip() for value in conn.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    address = peer
    for hop in reversed([h for h in hops if h]):
        if not in_networks(address, trusted):
            break
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage in the chain: stop at the last address a trusted proxy vouched for
        address = hop
    return address
