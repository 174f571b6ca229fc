"""The client address from x-forwarded-for, as Envoy (use_remote_address) leaves it."""

from __future__ import annotations

import pytest

from extproc.auth import UNKNOWN_ADDRESS, client_address
from extproc.auth.client_address import parse_address


def xff(value: str) -> dict[str, str]:
    return {"x-forwarded-for": value}


def test_envoy_appended_entry_wins_over_spoofed_ones() -> None:
    # the client wrote 1.2.3.4; Envoy appended the peer it saw
    assert client_address(xff("1.2.3.4, 127.0.0.1"), 0) == "127.0.0.1"
    assert client_address(xff("1.2.3.4,5.6.7.8, 203.0.113.9"), 0) == "203.0.113.9"
    assert client_address(xff("203.0.113.9"), 0) == "203.0.113.9"


def test_trusted_hops_take_the_entry_the_outermost_proxy_wrote() -> None:
    # client 198.51.100.1 -> proxy (appends it) -> Envoy (appends the proxy 10.0.0.2)
    assert client_address(xff("198.51.100.1, 10.0.0.2"), 1) == "198.51.100.1"
    # a spoofed entry left of the proxy's is ignored
    assert client_address(xff("6.6.6.6, 198.51.100.1, 10.0.0.2"), 1) == "198.51.100.1"
    # two proxies: CDN wrote the client, the load balancer the CDN, Envoy the LB
    header = xff("6.6.6.6, 198.51.100.1, 203.0.113.50, 10.0.0.2")
    assert client_address(header, 2) == "198.51.100.1"


def test_too_few_entries_fall_back_to_envoys_peer() -> None:
    # a client that bypassed the trusted proxies: only Envoy's entry is there
    assert client_address(xff("203.0.113.9"), 1) == "203.0.113.9"
    assert client_address(xff("1.2.3.4, 203.0.113.9"), 2) == "203.0.113.9"


def test_garbled_trusted_entry_falls_back_to_envoys_peer() -> None:
    assert client_address(xff("not-an-ip, 10.0.0.2"), 1) == "10.0.0.2"
    assert client_address(xff("1.2.3.4, , 10.0.0.2"), 1) == "10.0.0.2"  # empty entry counts


@pytest.mark.parametrize(
    ("header", "address"),
    [
        ("2001:db8::1", "2001:db8::1"),
        ("1.2.3.4, 2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("203.0.113.9:51234", "203.0.113.9"),
        ("  203.0.113.9  ", "203.0.113.9"),
        ("::1", "::1"),
    ],
)
def test_ports_brackets_and_ipv6(header: str, address: str) -> None:
    assert client_address(xff(header), 0) == address


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        ",",
        "1.2.3.4,",
        "garbage",
        "1.2.3.4, 999.1.1.1",
        "1.2.3.4, 1.2.3.4:http",
        "1.2.3.4, 1.2.3.4:123456",
        "1.2.3.4, [2001:db8::1",
        "1.2.3.4, [2001:db8::1]x",
        "1.2.3.4, [2001:db8::1]:",
        "1.2.3.4, 1.2.3.4:\u0661\u0662",  # non-ASCII digits are not a port
        "unknown",
        "1.2.3.4, localhost",
    ],
)
def test_garbage_is_unknown(header: str) -> None:
    assert client_address(xff(header), 0) == UNKNOWN_ADDRESS


def test_missing_header_is_unknown() -> None:
    assert client_address({}, 0) == UNKNOWN_ADDRESS
    assert client_address({"x-real-ip": "1.2.3.4"}, 0) == UNKNOWN_ADDRESS


def test_other_headers_are_not_trusted() -> None:
    headers = {"x-envoy-external-address": "6.6.6.6", "x-real-ip": "6.6.6.6"}
    headers |= xff("203.0.113.9")
    assert client_address(headers, 0) == "203.0.113.9"


@pytest.mark.parametrize("hops", [-1, 1.5, True])
def test_invalid_trusted_hops(hops: object) -> None:
    with pytest.raises(ValueError, match="trusted_hops"):
        client_address(xff("1.2.3.4"), hops)  # type: ignore[arg-type]


def test_parse_address() -> None:
    assert parse_address("10.0.0.1") == "10.0.0.1"
    assert parse_address("[::1]:80") == "::1"
    assert parse_address("fe80::1%eth0") == "fe80::1%eth0"
    assert parse_address("01.2.3.4") is None
    assert parse_address("") is None
