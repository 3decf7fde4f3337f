"""What counts as a host in the configuration: an IP address or a valid DNS host name.

Anything else ("evil host", "1.2.3", an empty string) is refused before a socket is opened or an
address is signed into the peer's record. Loopback and wildcard tests let the configuration insist
on consent before the API leaves this machine and on an explicit address to advertise.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_MAX_NAME = 253


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_host(host: str) -> str:
    """`host` itself if it is an IP address or a host name; ValueError otherwise."""
    if _ip(host) is not None:
        return host
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if (not name or len(name) > _MAX_NAME or not all(_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):
        shown = host if len(host) <= 64 else host[:64] + "…"
        raise ValueError(f"{shown!r} is neither an IP address nor a valid host name")
    return host


def is_wildcard(host: str) -> bool:
    """0.0.0.0 or :: — every interface (never an address to give to others)."""
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


def is_loopback(host: str) -> bool:
    """Reachable from this machine only: a loopback address or the name `localhost`."""
    ip = _ip(host)
    if ip is not None:
        return ip.is_loopback
    return host.rstrip(".").lower() == "localhost"
