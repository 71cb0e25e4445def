"""Who is guessing: the source a code attempt is counted against (issue 10 item 5).

Behind a load balancer every request comes from the balancer's address: keyed on it, 20 bad codes would
lock ``/report`` out for everyone. The operator names the proxies it trusts (``trusted_proxies``, CIDRs);
for a request from one of them the source is the rightmost address of ``X-Forwarded-For`` that is not a
trusted proxy (the hops to its left were written by the client, who can write anything there).
An IPv6 client controls at least a /64, so IPv6 sources are counted per /64.

The PROXY protocol is not supported: aiohttp's server reads HTTP from the first byte, so it would need a
protocol wrapper in front of its parser (a listener of our own), and every balancer an operator would put
in front of this API (HAProxy, nginx, cloud load balancers) can send ``X-Forwarded-For`` instead.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPV6_PREFIX = 64


@functools.cache
def trusted_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """:func:`parse_networks`, parsed once per list (the API calls it for each request)."""
    return parse_networks(cidrs)


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The trusted proxies as networks (a bare address is a /32 or /128). ValueError names a bad one."""
    nets = []
    for text in cidrs:
        try:
            nets.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
    return tuple(nets)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[Network]) -> bool:
    return any(addr in net for net in trusted)


def source_of(remote: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The source a request's code attempts count against: an IPv4 address or an IPv6 /64.

    ``remote`` is the peer address of the connection, ``forwarded_for`` the values of every
    ``X-Forwarded-For`` header (honoured only when ``remote`` is a trusted proxy).
    """
    peer = _address(remote or "")
    if peer is None:
        return remote or "unknown"
    client = peer
    if _trusted(peer, trusted):
        hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            addr = _address(hop)
            if addr is None:  # not written by a proxy: the hop to its right is the last we can believe
                break
            client = addr
            if not _trusted(addr, trusted):
                break
    return _key(client)


def _key(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, IPV6_PREFIX), strict=False))
    return str(addr)
