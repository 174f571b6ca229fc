"""Proxy-key hardening: key ring, brute-force lockout, client address (pure: no gRPC)."""

from extproc.auth.client_address import UNKNOWN_ADDRESS, client_address
from extproc.auth.keys import KeyRing, hash_key
from extproc.auth.lockout import Lockout

__all__ = ["UNKNOWN_ADDRESS", "KeyRing", "Lockout", "client_address", "hash_key"]
