"""The client's address, as Envoy established it, from ``x-forwarded-for``.

Envoy's HTTP connection manager in this project runs with
``use_remote_address: true`` (``extproc/envoy_config/bootstrap.py``). Envoy
then edits the request headers before any HTTP filter runs (so the ext_proc
processor sees the edited headers): it *appends* the address of its immediate
peer, the TCP connection's source, to ``x-forwarded-for`` (XFF), keeping
whatever the client wrote there before it. Everything left of the entries
Envoy and trusted proxies appended is client-supplied and can be forged:
``x-forwarded-for: 1.2.3.4, 203.0.113.9`` is a client that wrote ``1.2.3.4``
connecting from ``203.0.113.9``.

Envoy's own rule (``xff_num_trusted_hops``: N trusted proxies in front of it)
takes the Nth address from the right of the XFF it *received*, that is the
(N+1)th from the right after its own append. :func:`client_address` applies
the same rule to the header as the processor sees it:

* ``trusted_hops == 0``: the right-most entry, the one Envoy appended;
* ``trusted_hops == N > 0``: the entry N positions left of the right-most
  one, written by the outermost trusted proxy. As in Envoy, when the header
  has too few entries or that entry is not an IP address, the right-most entry
  (Envoy's peer) is used instead.

Never the left-most entry: that is whatever the client wrote. Entries are
separated by commas (an empty entry still counts, as in Envoy); each may carry
a port (``1.2.3.4:8080``, ``[2001:db8::1]:443``) or IPv6 brackets, which are
removed, and must then parse with :mod:`ipaddress`. Addresses are returned in
canonical form (IPv6 compressed and lower case; an IPv4-mapped IPv6 address as
its IPv4 address), so one client has one spelling. A missing, empty or
unparseable header gives ``"unknown"`` (:data:`UNKNOWN_ADDRESS`).

``trusted_hops`` must equal the ``xff_num_trusted_hops`` the bootstrap gives
Envoy (HTTP connection manager, or its XFF original-IP-detection extension):
with a larger value here, clients could choose their address; with a smaller
one, every client behind the front proxies shares the proxy's address. The
bootstrap does not set it yet (0).

Not ``x-envoy-external-address``: Envoy sets it only for requests it deems
external and leaves it as sent on internal ones (no XFF and a private or
loopback peer), so a local client can forge it. Note that for a loopback
peer Envoy appends its own local address rather than ``127.0.0.1``: every
client on the proxy's host has that one address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

__all__ = ["UNKNOWN_ADDRESS", "XFF_HEADER", "client_address", "parse_address"]

#: The header Envoy appends the peer address to.
XFF_HEADER = "x-forwarded-for"
#: The address of a request whose header gives none.
UNKNOWN_ADDRESS = "unknown"


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def parse_address(entry: str) -> str | None:
    """One XFF entry as a canonical IP address (port and brackets removed), or None."""
    text = entry.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
    elif text.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has several)
        host, _, port = text.partition(":")
        if not _is_port(port):
            return None
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def client_address(headers: Mapping[str, str], trusted_hops: int) -> str:
    """The client's address from the (lower-case) request headers, after Envoy's edit."""
    if isinstance(trusted_hops, bool) or not isinstance(trusted_hops, int) or trusted_hops < 0:
        raise ValueError(f"trusted_hops must be a non-negative integer, not {trusted_hops!r}")
    header = headers.get(XFF_HEADER)
    if not header:
        return UNKNOWN_ADDRESS
    entries = header.split(",")
    if trusted_hops and len(entries) > trusted_hops:
        trusted = parse_address(entries[-1 - trusted_hops])
        if trusted is not None:
            return trusted
    return parse_address(entries[-1]) or UNKNOWN_ADDRESS
