"""Which client an incoming socket belongs to, for rate limits and connection caps.

Without trusted proxies the TCP peer is the client and ``X-Forwarded-For`` is never read.
With ``N`` trusted hops the client is the N-th entry counted from the right of
``X-Forwarded-For`` (each trusted proxy appends the address it saw), so a client cannot pick its
own bucket by prepending addresses — the reference took the left-most entry (relay spec W6).
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["UNKNOWN_CLIENT", "client_ip", "is_valid_ip", "prefix_key", "rate_key"]

UNKNOWN_CLIENT = "unknown"
_MAX_IP_LENGTH = 64
# Every socket needs its address checked and turned into two bucket keys; parsing with
# ``ipaddress`` costs several microseconds each time, and most sockets come from addresses
# seen shortly before. A bounded cache per function: a flood of fresh addresses only evicts.
_CACHED_ADDRESSES = 4096
_cached = functools.lru_cache(maxsize=_CACHED_ADDRESSES)


@_cached
def is_valid_ip(text: str) -> bool:
    """True for a literal IPv4 or IPv6 address (IPv6 zone ids allowed)."""
    if not text or len(text) > _MAX_IP_LENGTH:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def client_ip(peer: str | None, forwarded_for: list[str], trusted_hops: int) -> str:
    """The client address of a socket.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header value in order; it is ignored
    unless ``trusted_hops`` > 0. A chosen entry that is not an IP falls back to the peer.
    """
    fallback = peer if peer and is_valid_ip(peer) else (peer or UNKNOWN_CLIENT)
    if trusted_hops <= 0:
        return fallback
    entries = [part.strip() for value in forwarded_for for part in value.split(",")]
    entries = [entry for entry in entries if entry]
    if not entries:
        return fallback
    # Right to left: the last trusted proxy's view is the final entry. With fewer entries
    # than trusted hops, the left-most entry is as far as the trusted chain reaches.
    chosen = entries[-trusted_hops] if len(entries) >= trusted_hops else entries[0]
    return chosen if is_valid_ip(chosen) else fallback


@_cached
def rate_key(ip: str) -> str:
    """Bucket key for an address: IPv4 as is, IPv6 by its /64 (one host usually owns a /64)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


@_cached
def prefix_key(ip: str) -> str | None:
    """Bucket key of the network around an address: IPv4 by its /24, IPv6 by its /48 (one
    site usually owns a /48). ``ip`` may also be a :func:`rate_key` (an IPv6 /64, as a
    client's key travels between relay instances). None for anything else."""
    try:
        address = ipaddress.ip_network(ip, strict=False).network_address
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = 24 if isinstance(address, ipaddress.IPv4Address) else 48
    return str(ipaddress.ip_network((address, bits), strict=False))
